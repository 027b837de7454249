//! Records as Arrow columns (feature `arrow`): one row per record, one column per field
//! name of the kinds read ([`crate::fields`], the names `mdtail --format jsonl` prints).
//! The Python package hands them to polars without a copy; `mdarchive export` writes
//! them as Parquet.
//!
//! Types: text as `Utf8View` (polars' own string layout: short strings inline), prices,
//! quantities and volumes as `Decimal128(38, scale)` — exact, at the finest scale of the
//! batch, so one instrument's column has its own scale — integers as `Int64`/`UInt64`,
//! flags as `Boolean`, book levels as `List<Struct<price, qty>>`. A field that a row's
//! kind does not have is null.

use std::sync::{Arc, OnceLock};

use arrow_array::builder::make_view;
use arrow_array::{
    Array, ArrayRef, BooleanArray, Decimal128Array, Int64Array, ListArray, RecordBatch,
    StringViewArray, StructArray, UInt64Array,
};
use arrow_buffer::{BooleanBuffer, Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field as ArrowField, Fields, Schema, SchemaRef};
use mdi_protocol::decimal::Decimal;
use mdi_protocol::records::{
    BookUpdate, FeedStatus, InstrumentDefinition, Kline, Quote, RecordEncoder, RecordKind,
    RecordKinds, RecordType, Trade,
};
use mdi_protocol::view::RecordView;

use crate::fields::{Field, FieldSink, Head, Value, visit_fields, with_fields};

mod memory;

use memory::{Carver, ChunkMemory, Slots};

/// A value already copied out of its record (the Python objects' fields), as a column
/// takes it.
#[derive(Debug, Clone, Copy)]
pub enum Cell<'a> {
    /// A field value.
    Value(Value<'a>),
    /// No value.
    Null,
    /// Book levels as (price, quantity) pairs.
    Levels(&'a [(Decimal, Decimal)]),
}

/// What a column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ColumnType {
    Text,
    Decimal,
    Int,
    UInt,
    Bool,
    Levels,
}

impl ColumnType {
    fn of(value: &Value<'_>) -> Self {
        match value {
            Value::Str(_) | Value::MaybeStr(_) => Self::Text,
            Value::Dec(_) => Self::Decimal,
            Value::Int(_) => Self::Int,
            Value::UInt(_) => Self::UInt,
            Value::Bool(_) => Self::Bool,
            Value::Levels(_) => Self::Levels,
        }
    }

    /// The width of a value kept in the chunk's memory (0: kept apart, in vectors).
    fn width(self) -> usize {
        match self {
            Self::Text | Self::Decimal => 16,
            Self::Int | Self::UInt => 8,
            Self::Bool | Self::Levels => 0,
        }
    }

    /// Two kinds with a field of the same name: signed wins over unsigned (trade ids
    /// are unsigned in trades, −1 for none in K-lines).
    fn merge(self, other: Self) -> Self {
        match (self, other) {
            (Self::UInt, Self::Int) | (Self::Int, Self::UInt) => Self::Int,
            (a, _) => a,
        }
    }
}

/// The columns of a set of kinds, and where each kind's fields go.
#[derive(Debug)]
pub struct Layout {
    columns: Vec<(&'static str, ColumnType)>,
    /// Per record kind (`kind - 16`): its bit, and for field i its column (`None`: a
    /// head column already written); `None` for kinds outside the layout.
    places: [Option<(u8, Vec<Option<usize>>)>; 6],
    /// Per column: the bits of the kinds that have it (all for the head).
    users: Vec<u8>,
}

/// The head columns every row has.
const HEAD: [(&str, ColumnType); 3] = [
    ("kind", ColumnType::Text),
    ("symbol", ColumnType::Text),
    ("instrument_id", ColumnType::UInt),
];

/// A kind, its name, and its fields' names and column types in order.
type KindFields = (RecordKind, &'static str, Vec<(&'static str, ColumnType)>);

/// Every kind's field names and types, in order, read from a default record of each
/// (the field list has one home: `mdi_subscriber::fields`).
fn kind_fields() -> &'static [KindFields] {
    static FIELDS: OnceLock<Vec<KindFields>> = OnceLock::new();
    FIELDS.get_or_init(|| {
        fn of<T: RecordType>(record: &T) -> KindFields {
            let bytes = RecordEncoder::new()
                .encode(record)
                .expect("a default record encodes")
                .to_vec();
            // ring bodies are 8-byte aligned
            let mut words = vec![0u64; bytes.len().div_ceil(8)];
            zerocopy::IntoBytes::as_mut_bytes(&mut words[..])[..bytes.len()]
                .copy_from_slice(&bytes);
            let body = zerocopy::IntoBytes::as_bytes(&words[..]);
            RecordView::open(T::KIND, body, |view| {
                with_fields("", 0, Some(""), view, |head, fields| {
                    (
                        T::KIND,
                        head.kind_name,
                        fields
                            .iter()
                            .map(|f| (f.name, ColumnType::of(&f.value)))
                            .collect(),
                    )
                })
            })
            .expect("a default record opens")
            .expect("an mdi kind")
            .expect("a default record has its fields")
        }
        vec![
            of(&Trade::default()),
            of(&Quote::default()),
            of(&BookUpdate::default()),
            of(&Kline::default()),
            of(&FeedStatus::default()),
            of(&InstrumentDefinition::default()),
        ]
    })
}

/// The slot of an mdi record kind (16..=21) in [`Layout::places`].
fn kind_slot(kind: RecordKind) -> Option<usize> {
    usize::from(kind.0).checked_sub(16).filter(|&i| i < 6)
}

impl Layout {
    fn places(&self, kind: RecordKind) -> Option<&(u8, Vec<Option<usize>>)> {
        kind_slot(kind).and_then(|i| self.places[i].as_ref())
    }

    /// The columns for `kinds`: the head, then each kind's fields in the order of
    /// `RecordKind::RECORDS`, a name shared by kinds once.
    pub fn new(kinds: RecordKinds) -> Self {
        let mut columns: Vec<(&'static str, ColumnType)> = HEAD.to_vec();
        let mut users = vec![u8::MAX; HEAD.len()];
        let mut places: [Option<(u8, Vec<Option<usize>>)>; 6] = Default::default();
        for (bit, (kind, _, fields)) in kind_fields().iter().enumerate() {
            if !kinds.contains(*kind) {
                continue;
            }
            let bit = 1u8 << bit;
            let mut place = Vec::with_capacity(fields.len());
            for (field, ty) in fields {
                match columns.iter().position(|(n, _)| n == field) {
                    Some(i) if i < HEAD.len() => place.push(None),
                    Some(i) => {
                        columns[i].1 = columns[i].1.merge(*ty);
                        users[i] |= bit;
                        place.push(Some(i));
                    }
                    None => {
                        columns.push((field, *ty));
                        users.push(bit);
                        place.push(Some(columns.len() - 1));
                    }
                }
            }
            if let Some(slot) = kind_slot(*kind) {
                places[slot] = Some((bit, place));
            }
        }
        Self {
            columns,
            places,
            users,
        }
    }
}

/// One column being filled.
#[derive(Debug)]
enum Data {
    /// Arrow string views: a string of up to 12 bytes is its view; longer ones live in
    /// `data`.
    Text {
        views: Slots<u128>,
        data: Vec<u8>,
    },
    Decimal {
        mantissas: Slots<i128>,
        exponents: Vec<i8>,
    },
    Int(Slots<i64>),
    UInt(Slots<u64>),
    Bool(Vec<bool>),
    Levels {
        offsets: Vec<i32>,
        prices: Vec<i128>,
        price_exponents: Vec<i8>,
        qtys: Vec<i128>,
        qty_exponents: Vec<i8>,
    },
}

#[derive(Debug)]
struct Column {
    name: &'static str,
    data: Data,
    /// The rows that are null, as runs `start..end` (a value pushed costs nothing here).
    nulls: Vec<(u32, u32)>,
    len: usize,
}

impl Column {
    fn new(name: &'static str, ty: ColumnType, capacity: usize, memory: &mut Carver) -> Self {
        let data = match ty {
            ColumnType::Text => Data::Text {
                views: memory.slots(),
                data: Vec::new(),
            },
            ColumnType::Decimal => Data::Decimal {
                mantissas: memory.slots(),
                exponents: Vec::with_capacity(capacity),
            },
            ColumnType::Int => Data::Int(memory.slots()),
            ColumnType::UInt => Data::UInt(memory.slots()),
            ColumnType::Bool => Data::Bool(Vec::with_capacity(capacity)),
            ColumnType::Levels => Data::Levels {
                offsets: vec![0],
                prices: Vec::new(),
                price_exponents: Vec::new(),
                qtys: Vec::new(),
                qty_exponents: Vec::new(),
            },
        };
        Self {
            name,
            data,
            nulls: Vec::new(),
            len: 0,
        }
    }

    /// This column in a larger chunk's memory (its values copied).
    fn moved_to(self, memory: &mut Carver) -> Self {
        let data = match self.data {
            Data::Text { views, data } => Data::Text {
                views: views.moved_to(memory.slots()),
                data,
            },
            Data::Decimal {
                mantissas,
                exponents,
            } => Data::Decimal {
                mantissas: mantissas.moved_to(memory.slots()),
                exponents,
            },
            Data::Int(v) => Data::Int(v.moved_to(memory.slots())),
            Data::UInt(v) => Data::UInt(v.moved_to(memory.slots())),
            other @ (Data::Bool(_) | Data::Levels { .. }) => other,
        };
        Self { data, ..self }
    }

    fn push_null(&mut self) {
        // a chunk's rows fit in a u32
        let row = self.len as u32;
        match self.nulls.last_mut() {
            Some((_, end)) if *end == row => *end += 1,
            _ => self.nulls.push((row, row + 1)),
        }
        match &mut self.data {
            Data::Text { views, .. } => views.push(0),
            Data::Decimal {
                mantissas,
                exponents,
            } => {
                mantissas.push(0);
                exponents.push(0);
            }
            Data::Int(v) => v.push(0),
            Data::UInt(v) => v.push(0),
            Data::Bool(v) => v.push(false),
            Data::Levels { offsets, .. } => offsets.push(*offsets.last().unwrap_or(&0)),
        }
        self.len += 1;
    }

    /// Nulls up to row `row` (fields this column's kind did not have).
    #[inline]
    fn pad(&mut self, row: usize) {
        while self.len < row {
            self.push_null();
        }
    }

    #[inline(always)]
    fn push(&mut self, value: &Value<'_>) {
        match (&mut self.data, value) {
            (Data::Text { views, data }, Value::Str(s) | Value::MaybeStr(Some(s))) => {
                let bytes = s.as_bytes();
                let view = if bytes.len() <= 12 {
                    inline_view(bytes)
                } else {
                    // one buffer per column: offsets are u32 (4 GiB of long strings in one
                    // batch — never met — would be null past that)
                    let Ok(offset) = u32::try_from(data.len()) else {
                        return self.push_null();
                    };
                    if u32::try_from(data.len() + bytes.len()).is_err() {
                        return self.push_null();
                    }
                    data.extend_from_slice(bytes);
                    make_view(bytes, 0, offset)
                };
                views.push(view);
            }
            (Data::Text { .. }, Value::MaybeStr(None)) => return self.push_null(),
            (
                Data::Decimal {
                    mantissas,
                    exponents,
                },
                Value::Dec(d),
            ) => {
                mantissas.push(d.mantissa);
                exponents.push(d.exponent);
            }
            (Data::Int(v), Value::Int(n)) => v.push(*n),
            // a trade id (u64) in a signed column: ids stay below 2^63
            (Data::Int(v), Value::UInt(n)) => v.push(i64::try_from(*n).unwrap_or(i64::MAX)),
            (Data::UInt(v), Value::UInt(n)) => v.push(*n),
            (Data::Bool(v), Value::Bool(b)) => v.push(*b),
            (
                Data::Levels {
                    offsets,
                    prices,
                    price_exponents,
                    qtys,
                    qty_exponents,
                },
                Value::Levels(levels),
            ) => {
                for (price, qty) in levels.decimals() {
                    prices.push(price.mantissa);
                    price_exponents.push(price.exponent);
                    qtys.push(qty.mantissa);
                    qty_exponents.push(qty.exponent);
                }
                offsets.push(i32::try_from(prices.len()).unwrap_or(i32::MAX));
            }
            // a type the layout did not expect (it derives from the same field list)
            _ => return self.push_null(),
        }
        self.len += 1;
    }

    fn push_cell(&mut self, cell: &Cell<'_>) {
        match cell {
            Cell::Value(value) => self.push(value),
            Cell::Null => self.push_null(),
            Cell::Levels(levels) => {
                let Data::Levels {
                    offsets,
                    prices,
                    price_exponents,
                    qtys,
                    qty_exponents,
                } = &mut self.data
                else {
                    return self.push_null();
                };
                for (price, qty) in levels.iter() {
                    prices.push(price.mantissa);
                    price_exponents.push(price.exponent);
                    qtys.push(qty.mantissa);
                    qty_exponents.push(qty.exponent);
                }
                offsets.push(i32::try_from(prices.len()).unwrap_or(i32::MAX));
                self.len += 1;
            }
        }
    }

    /// The finest scale among this column's decimals (prices and quantities of levels
    /// apart): what [`Self::finish`] needs the same for every chunk of a stream.
    fn scales(&self) -> (i32, i32) {
        match &self.data {
            Data::Decimal { exponents, .. } => (finest(exponents), 0),
            Data::Levels {
                price_exponents,
                qty_exponents,
                ..
            } => (finest(price_exponents), finest(qty_exponents)),
            _ => (0, 0),
        }
    }

    fn finish(self, scales: (i32, i32)) -> (ArrowField, ArrayRef) {
        let nulls = (!self.nulls.is_empty()).then(|| {
            let mut valid = vec![true; self.len];
            for &(start, end) in &self.nulls {
                valid[start as usize..end as usize].fill(false);
            }
            NullBuffer::from(valid)
        });
        let name = self.name;
        match self.data {
            Data::Text { views, data } => {
                // Views made without `try_new`'s check of every string again (a sixth of
                // a batch's cost); tested by `batches_pass_arrows_full_validation`.
                #[allow(unsafe_code)] // memory handed to a foreign reader (Arrow's C ABI)
                // SAFETY: every view was made by `Column::push` from a `&str` (valid
                // UTF-8): inline ones hold its bytes, the others point at the offset in
                // `data` (buffer 0) where its bytes were appended, in bounds (checked
                // there).
                let array = unsafe {
                    StringViewArray::new_unchecked(
                        views.into_buffer(),
                        vec![Buffer::from_vec(data)].into(),
                        nulls,
                    )
                };
                (
                    ArrowField::new(name, DataType::Utf8View, true),
                    Arc::new(array),
                )
            }
            Data::Decimal {
                mut mantissas,
                exponents,
            } => {
                let overflow = rescale(mantissas.as_mut_slice(), &exponents, scales.0);
                let array = decimals(mantissas.into_buffer(), scales.0, nulls, overflow);
                (
                    ArrowField::new(name, array.data_type().clone(), true),
                    Arc::new(array),
                )
            }
            Data::Int(v) => (
                ArrowField::new(name, DataType::Int64, true),
                Arc::new(Int64Array::new(v.into_buffer(), nulls)),
            ),
            Data::UInt(v) => (
                ArrowField::new(name, DataType::UInt64, true),
                Arc::new(UInt64Array::new(v.into_buffer(), nulls)),
            ),
            Data::Bool(v) => (
                ArrowField::new(name, DataType::Boolean, true),
                Arc::new(BooleanArray::new(BooleanBuffer::from(v), nulls)),
            ),
            Data::Levels {
                offsets,
                mut prices,
                price_exponents,
                mut qtys,
                qty_exponents,
            } => {
                let overflow = rescale(&mut prices, &price_exponents, scales.0);
                let price = decimals(ScalarBuffer::from(prices), scales.0, None, overflow);
                let overflow = rescale(&mut qtys, &qty_exponents, scales.1);
                let qty = decimals(ScalarBuffer::from(qtys), scales.1, None, overflow);
                let fields = Fields::from(vec![
                    ArrowField::new("price", price.data_type().clone(), false),
                    ArrowField::new("qty", qty.data_type().clone(), false),
                ]);
                let levels = StructArray::new(
                    fields.clone(),
                    vec![Arc::new(price) as ArrayRef, Arc::new(qty)],
                    None,
                );
                let item = Arc::new(ArrowField::new("item", DataType::Struct(fields), false));
                let list = ListArray::new(
                    item.clone(),
                    OffsetBuffer::new(ScalarBuffer::from(offsets)),
                    Arc::new(levels),
                    nulls,
                );
                (
                    ArrowField::new(name, DataType::List(item), true),
                    Arc::new(list),
                )
            }
        }
    }
}

/// The Arrow view of a string of up to 12 bytes: its length, then its bytes. Built in
/// registers from two loads that may overlap (the bytes they share are the same): a
/// copy through a stack buffer costs a store-forwarding stall, a loop a branch a byte.
#[inline(always)]
fn inline_view(bytes: &[u8]) -> u128 {
    #[inline(always)]
    fn word(bytes: &[u8], at: usize) -> u128 {
        let four: [u8; 4] = bytes[at..at + 4].try_into().unwrap_or_default();
        u128::from(u32::from_le_bytes(four))
    }
    let n = bytes.len().min(12);
    let data = match n {
        0 => 0,
        1..=3 => {
            u128::from(bytes[0])
                | u128::from(bytes[n / 2]) << (8 * (n / 2))
                | u128::from(bytes[n - 1]) << (8 * (n - 1))
        }
        4..=7 => word(bytes, 0) | word(bytes, n - 4) << (8 * (n - 4)),
        _ => {
            let eight: [u8; 8] = bytes[..8].try_into().unwrap_or_default();
            let low = u64::from_le_bytes(eight);
            u128::from(low) | word(bytes, n - 4) << (8 * (n - 4))
        }
    };
    n as u128 | data << 32
}

/// The finest scale of these exponents (−exponent, at least 0, at most 38).
fn finest(exponents: &[i8]) -> i32 {
    exponents
        .iter()
        .map(|&e| -i32::from(e))
        .max()
        .unwrap_or(0)
        .clamp(0, 38)
}

/// Mantissas at their exponents rescaled in place to `scale` (the finest among them,
/// or finer): exact. A value that does not fit 38 digits there becomes 0, and false in
/// the validity returned (`None`: every value fits).
fn rescale(mantissas: &mut [i128], exponents: &[i8], scale: i32) -> Option<Vec<bool>> {
    let mut overflow: Option<Vec<bool>> = None;
    if exponents.iter().any(|&e| -i32::from(e) != scale) {
        for (i, (m, &e)) in mantissas.iter_mut().zip(exponents).enumerate() {
            let shift = u32::try_from(scale + i32::from(e)).unwrap_or(0);
            match 10i128.checked_pow(shift).and_then(|p| m.checked_mul(p)) {
                Some(v) => *m = v,
                None => {
                    *m = 0;
                    overflow.get_or_insert_with(|| vec![true; exponents.len()])[i] = false;
                }
            }
        }
    }
    overflow
}

/// Mantissas rescaled to `scale` as one Decimal128 column; null where `nulls` says or
/// where the value did not fit (`overflow`, from [`rescale`]).
fn decimals(
    mantissas: ScalarBuffer<i128>,
    scale: i32,
    nulls: Option<NullBuffer>,
    overflow: Option<Vec<bool>>,
) -> Decimal128Array {
    let nulls = match (nulls, overflow) {
        (n, None) => n,
        (None, Some(o)) => Some(NullBuffer::from(o)),
        (Some(n), Some(o)) => Some(NullBuffer::from(
            n.iter().zip(o).map(|(a, b)| a && b).collect::<Vec<_>>(),
        )),
    };
    let scale = i8::try_from(scale).unwrap_or(38);
    Decimal128Array::new(mantissas, nulls)
        .with_precision_and_scale(38, scale)
        .expect("precision 38 holds any scale up to 38")
}

/// One record being written into its row: fields straight into their columns (each
/// call inlined where the value's type is known, so no field is matched at run time).
struct Row<'c> {
    columns: &'c mut [Column],
    /// Each field's column (`None`: a head column, already written).
    places: &'c [Option<usize>],
    /// The next field's index.
    next: usize,
    row: usize,
}

impl<'a> FieldSink<'a> for Row<'_> {
    #[inline(always)]
    fn head(&mut self, head: &Head<'a>) {
        self.columns[0].push(&Value::Str(head.kind_name));
        self.columns[1].push(&Value::MaybeStr(head.symbol));
        self.columns[2].push(&Value::UInt(head.instrument_id.into()));
    }

    #[inline(always)]
    fn field(&mut self, field: Field<'a>) {
        if let Some(&Some(i)) = self.places.get(self.next) {
            let column = &mut self.columns[i];
            column.pad(self.row);
            column.push(&field.value);
        }
        self.next += 1;
    }
}

/// Rows of one chunk of a batch.
const CHUNK_ROWS: usize = 1 << 16;

/// Rows being collected, in chunks of [`CHUNK_ROWS`] (each allocated once at its full
/// size: no column is copied to grow), exported as a stream of record batches.
#[derive(Debug)]
pub struct Columns {
    layout: Arc<Layout>,
    /// Full chunks and their rows.
    full: Vec<(Vec<Column>, usize)>,
    columns: Vec<Column>,
    rows: usize,
    capacity: usize,
    /// The bits of the kinds that have rows.
    seen: u8,
}

impl Columns {
    /// Columns for `layout`, the first chunk sized for `expected` rows (at most a chunk).
    pub fn new(layout: Arc<Layout>, expected: usize) -> Self {
        let capacity = expected.clamp(16, CHUNK_ROWS);
        let columns = Self::chunk(&layout, capacity, false);
        Self {
            layout,
            full: Vec::new(),
            columns,
            rows: 0,
            capacity,
            seen: 0,
        }
    }

    /// A chunk's columns, for `capacity` rows; `huge`: the chunk is expected to fill
    /// (the one before it did), its memory mapped with huge pages.
    fn chunk(layout: &Layout, capacity: usize, huge: bool) -> Vec<Column> {
        let size = Carver::size(capacity, layout.columns.iter().map(|(_, ty)| ty.width()));
        let mut memory = Carver::new(ChunkMemory::new(size, huge), capacity);
        layout
            .columns
            .iter()
            .map(|&(name, ty)| Column::new(name, ty, capacity, &mut memory))
            .collect()
    }

    /// Appends the rows of `other` (of the same layout: else they are dropped, and false
    /// is returned): a batch read in parts, in the parts' order.
    pub fn append(&mut self, other: Columns) -> bool {
        if !Arc::ptr_eq(&self.layout, &other.layout) {
            return false;
        }
        if other.is_empty() {
            return true;
        }
        let mine = std::mem::replace(&mut self.columns, other.columns);
        if self.rows > 0 {
            self.full.push((mine, self.rows));
        }
        self.full.extend(other.full);
        self.rows = other.rows;
        self.capacity = other.capacity;
        self.seen |= other.seen;
        true
    }

    /// Rows collected.
    pub fn len(&self) -> usize {
        self.full.iter().map(|(_, rows)| rows).sum::<usize>() + self.rows
    }

    /// True before the first row.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A chunk's columns moved to memory for `capacity` rows.
    fn grown(layout: &Layout, columns: Vec<Column>, capacity: usize) -> Vec<Column> {
        let size = Carver::size(capacity, layout.columns.iter().map(|(_, ty)| ty.width()));
        let mut memory = Carver::new(ChunkMemory::new(size, false), capacity);
        columns
            .into_iter()
            .map(|column| column.moved_to(&mut memory))
            .collect()
    }

    /// Before a row: a first chunk sized for fewer rows grows (its rows copied, as a
    /// vector grows); a full chunk is set aside and a new one begun.
    #[inline]
    fn make_room(&mut self) {
        if self.rows == self.capacity && self.capacity < CHUNK_ROWS {
            let capacity = (self.capacity * 2).min(CHUNK_ROWS);
            let columns = std::mem::take(&mut self.columns);
            self.columns = Self::grown(&self.layout, columns, capacity);
            self.capacity = capacity;
        }
        if self.rows == CHUNK_ROWS {
            let mut done = Self::chunk(&self.layout, CHUNK_ROWS, true);
            std::mem::swap(&mut done, &mut self.columns);
            for column in &mut done {
                column.pad(self.rows);
            }
            self.full.push((done, self.rows));
            self.rows = 0;
            self.capacity = CHUNK_ROWS;
        }
    }

    /// Appends a record already copied out (kind name, symbol, instrument id, then its
    /// fields in the order [`crate::fields::with_fields`] gives them).
    pub fn push_cells<'c>(
        &mut self,
        kind_name: &str,
        symbol: Option<&str>,
        instrument_id: u32,
        cells: impl IntoIterator<Item = Cell<'c>>,
    ) {
        let Some(kind) = RecordKind::from_name(kind_name) else {
            return;
        };
        let Some(bit) = self.layout.places(kind).map(|(b, _)| *b) else {
            return;
        };
        self.make_room();
        let Some((_, places)) = self.layout.places(kind) else {
            return;
        };
        self.seen |= bit;
        let row = self.rows;
        let columns = &mut self.columns;
        columns[0].push(&Value::Str(kind_name));
        columns[1].push(&Value::MaybeStr(symbol));
        columns[2].push(&Value::UInt(instrument_id.into()));
        for (cell, place) in cells.into_iter().zip(places) {
            if let Some(i) = *place {
                let column = &mut columns[i];
                column.pad(row);
                column.push_cell(&cell);
            }
        }
        self.rows += 1;
    }

    /// Appends a record read in place (a kind outside the layout is not added); false if
    /// a field did not read (nothing is added then).
    #[inline]
    pub fn push_view(
        &mut self,
        stream: &str,
        seq: u64,
        symbol: Option<&str>,
        record: RecordView<'_>,
    ) -> bool {
        let kind = record.kind();
        let Some(bit) = self.layout.places(kind).map(|(b, _)| *b) else {
            return true;
        };
        self.make_room();
        let Some((_, places)) = self.layout.places(kind) else {
            return true;
        };
        let mut row = Row {
            columns: &mut self.columns,
            places,
            next: 0,
            row: self.rows,
        };
        if visit_fields(stream, seq, symbol, record, &mut row).is_err() {
            return false;
        }
        self.seen |= bit;
        self.rows += 1;
        true
    }

    /// The rows as record batches of one schema: every column of the layout's kinds,
    /// or with `present_only` those of the kinds that have rows (a stream's history:
    /// the K-lines of `klines` without the columns of trades); each decimal column at
    /// the finest scale of all its chunks.
    pub fn finish(mut self, present_only: bool) -> (SchemaRef, Vec<RecordBatch>) {
        let seen = if present_only && self.seen != 0 {
            self.seen
        } else {
            u8::MAX
        };
        let last = std::mem::take(&mut self.columns);
        self.full.push((last, self.rows));
        let keep: Vec<bool> = self.layout.users.iter().map(|u| u & seen != 0).collect();
        let mut scales = vec![(0, 0); keep.len()];
        for (chunk, _) in &self.full {
            for (i, column) in chunk.iter().enumerate() {
                let (a, b) = column.scales();
                scales[i] = (scales[i].0.max(a), scales[i].1.max(b));
            }
        }
        let mut schema: Option<SchemaRef> = None;
        let mut batches = Vec::with_capacity(self.full.len());
        for (chunk, rows) in self.full {
            // (only the last chunk can be empty: after full ones it adds nothing)
            if rows == 0 && schema.is_some() {
                continue;
            }
            let (fields, arrays): (Vec<_>, Vec<_>) = chunk
                .into_iter()
                .enumerate()
                .filter(|(i, _)| keep[*i])
                .map(|(i, mut c)| {
                    c.pad(rows);
                    c.finish(scales[i])
                })
                .unzip();
            let schema = schema
                .get_or_insert_with(|| Arc::new(Schema::new(fields)))
                .clone();
            batches.push(
                RecordBatch::try_new(schema, arrays)
                    .expect("columns of equal length and their types"),
            );
        }
        let schema = schema.expect("at least the last chunk");
        (schema, batches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mdi_protocol::records::{InstrumentDefinition, Side, Trade};

    #[test]
    fn an_inline_view_is_arrows_own() {
        let text = "abcdefghijkl";
        for n in 0..=12 {
            let bytes = &text.as_bytes()[..n];
            assert_eq!(inline_view(bytes), make_view(bytes, 0, 0), "{n} bytes");
        }
    }

    /// Rows of records of several kinds, with long and short text, as the columns make
    /// them: every array passes Arrow's full validation (the views made without it).
    #[test]
    fn batches_pass_arrows_full_validation() {
        fn with_view<T: RecordType>(record: &T, f: impl FnOnce(RecordView<'_>)) {
            let bytes = RecordEncoder::new().encode(record).unwrap().to_vec();
            let mut words = vec![0u64; bytes.len().div_ceil(8)];
            zerocopy::IntoBytes::as_mut_bytes(&mut words[..])[..bytes.len()]
                .copy_from_slice(&bytes);
            let body = zerocopy::IntoBytes::as_bytes(&words[..]);
            RecordView::open(T::KIND, body, f).unwrap();
        }
        let layout = Arc::new(Layout::new(RecordKinds::ALL));
        let mut columns = Columns::new(layout, 16);
        for i in 0..(CHUNK_ROWS as u64 + 100) {
            let trade = Trade {
                instrument_id: 7,
                price: 4_200_000 + i as i64,
                price_exponent: -2,
                qty: 3,
                qty_exponent: -((i % 9) as i8),
                aggressor: Side::Sell,
                ..Trade::default()
            };
            // a symbol past 12 bytes lives in the data buffer; one of 12 inline
            let symbol = if i % 2 == 0 {
                "BTCUSDT-PERPETUAL"
            } else {
                "ETHUSDT-PERP"
            };
            with_view(&trade, |view| {
                assert!(columns.push_view("a-long-stream-name", i, Some(symbol), view));
            });
            if i % 1000 == 0 {
                let definition = InstrumentDefinition {
                    instrument_id: 7,
                    venue: "a venue with a long name".into(),
                    symbol: symbol.into(),
                    ..InstrumentDefinition::default()
                };
                with_view(&definition, |view| {
                    assert!(columns.push_view("s", i, None, view));
                });
            }
        }
        let (schema, batches) = columns.finish(false);
        assert_eq!(batches.len(), 2);
        let mut rows = 0;
        for batch in &batches {
            assert_eq!(batch.schema(), schema);
            for column in batch.columns() {
                column.to_data().validate_full().unwrap();
            }
            rows += batch.num_rows();
        }
        assert_eq!(rows, CHUNK_ROWS + 100 + 66);
        let symbols = batches[0]
            .column_by_name("symbol")
            .unwrap()
            .as_any()
            .downcast_ref::<StringViewArray>()
            .unwrap();
        assert_eq!(symbols.value(0), "BTCUSDT-PERPETUAL");
        assert_eq!(symbols.value(2), "ETHUSDT-PERP");
    }
}
