//! `mdarchive export`: a stream's history as Parquet — one table per record kind, one
//! file per kind, symbol and UTC day (`kind=K/symbol=S/date=D/part-N.parquet`, hive
//! partitions) or one file when the range holds one kind of one symbol. Columns are
//! named as `mdtail --format jsonl` names its fields (built by
//! `mdi_subscriber::columns`, the same as the Python package's), prices and quantities
//! DECIMAL at the instrument's own scale; zstd, row groups of up to a million rows,
//! statistics; rows in publish order (the archive's).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use arrow_array::{Array, ArrayRef, Decimal128Array, RecordBatch};
use arrow_schema::DataType;
use mdi_archive::{ArchiveReader, ArchiveStart};
use mdi_protocol::records::{RecordError, RecordKind, RecordKinds};
use mdi_protocol::view::RecordView;
use mdi_subscriber::columns::{Columns, Layout};
use mdi_subscriber::fields::{Head, head_of};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

/// Rows of one Parquet file part (and of its row groups).
const PART_ROWS: usize = 1 << 20;

/// How far before the start definitions are read (the publisher repeats them every
/// second of stream time).
const DEFINITIONS_BEFORE_NS: i64 = 3_000_000_000;

/// Where an export from `from_ns` starts reading: that far before it, for the
/// definitions of the instruments (the progress total counts from here too).
pub fn reading_start(from_ns: Option<i64>) -> ArchiveStart {
    from_ns.map_or(ArchiveStart::Earliest, |t| {
        ArchiveStart::Time(t.saturating_sub(DEFINITIONS_BEFORE_NS))
    })
}

/// What to export.
#[derive(Debug)]
pub struct Export<'a> {
    pub archive: &'a Path,
    pub stream: &'a str,
    pub kinds: RecordKinds,
    pub symbols: Option<Vec<String>>,
    /// First and last publish time (ns), inclusive.
    pub from_ns: Option<i64>,
    pub to_ns: Option<i64>,
    pub out: &'a Path,
    /// Records read so far (for a progress bar), added to as the export goes.
    pub passed: &'a AtomicU64,
}

/// What an export wrote.
#[derive(Debug, Default)]
pub struct Exported {
    pub rows: u64,
    pub files: Vec<PathBuf>,
    /// Records skipped: did not decode.
    pub undecodable: u64,
    /// Records the archive does not have in the range (gap markers).
    pub missing: u64,
}

/// One output table: a kind, a symbol, a day.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Part {
    kind: &'static str,
    symbol: String,
    date: String,
}

struct Group {
    part: Part,
    columns: Columns,
    rows: usize,
    written: usize,
    /// The stream's clock (the latest record time met) at its last row.
    last_ns: i64,
}

/// What a record's table is found by without making its name: kind, instrument, UTC
/// day (the symbol is compared with the candidates' own).
type PartKey = (RecordKind, u32, i64);

const DAY_NS: i64 = 86_400_000_000_000;

pub fn export(job: &Export<'_>) -> Result<Exported> {
    let single = job.out.extension().is_some_and(|e| e == "parquet");
    let mut reader = ArchiveReader::open(job.archive, job.stream, reading_start(job.from_ns))?;
    let layouts: HashMap<RecordKind, Arc<Layout>> = job
        .kinds
        .iter()
        .map(|k| (k, Arc::new(Layout::new(RecordKinds::only(k)))))
        .collect();
    // instrument id → its symbol (an index into `names`)
    let mut instruments: HashMap<u32, usize> = HashMap::new();
    let mut names: Vec<String> = Vec::new();
    // the last instrument met — its symbol, whether it is wanted — and the last table
    // written: most records are of the instrument and table before them (both cleared
    // when a definition renames an instrument)
    let mut last_instrument: Option<(u32, Option<usize>, bool)> = None;
    let mut last_table: Option<(PartKey, usize)> = None;
    // the latest record time (exchange time; a K-line's open time) met so far
    let mut clock = i64::MIN;
    let mut groups: Vec<Group> = Vec::new();
    let mut index: HashMap<PartKey, Vec<usize>> = HashMap::new();
    let mut by_part: HashMap<Part, usize> = HashMap::new();
    let mut done = Exported::default();
    let mut failed: Option<anyhow::Error> = None;
    let mut ended = false;
    let from = job.from_ns.unwrap_or(i64::MIN);
    let to = job.to_ns.unwrap_or(i64::MAX);
    while !ended {
        let n = reader.poll(|r| {
            if r.publish_ns > to {
                ended = true;
                return false;
            }
            if let Some(end) = r.gap_end() {
                if r.publish_ns >= from {
                    done.missing += end - r.seq;
                }
                return true;
            }
            let kind = RecordKind(r.kind);
            let opened = RecordView::open(kind, r.body, |view| {
                if let RecordView::Instrument(d) = &view {
                    let (id, symbol) = (d.get_instrument_id(), d.symbol()?);
                    if instruments.get(&id).is_none_or(|&i| names[i] != symbol) {
                        names.push(symbol.to_owned());
                        instruments.insert(id, names.len() - 1);
                        last_instrument = None;
                        last_table = None;
                    }
                }
                if r.publish_ns < from || !job.kinds.contains(kind) {
                    return Ok::<_, RecordError>(None);
                }
                let id = view.instrument_id();
                let (symbol, wanted) = match last_instrument {
                    Some((last, symbol, wanted)) if last == id => (symbol, wanted),
                    _ => {
                        let symbol = instruments.get(&id).copied();
                        let wanted = job.symbols.as_ref().is_none_or(|wanted| {
                            symbol.is_some_and(|i| {
                                wanted.iter().any(|w| w.eq_ignore_ascii_case(&names[i]))
                            })
                        });
                        last_instrument = Some((id, symbol, wanted));
                        (symbol, wanted)
                    }
                };
                if !wanted {
                    return Ok(None);
                }
                let symbol = symbol.map(|i| names[i].as_str());
                let head = head_of(symbol, view)?;
                let key = (kind, head.instrument_id, head.at_ns.div_euclid(DAY_NS));
                let g = match last_table {
                    Some((last, g)) if last == key => g,
                    _ => {
                        let g = table(&mut index, &mut by_part, &mut groups, key, &head, || {
                            Columns::new(Arc::clone(&layouts[&kind]), PART_ROWS)
                        });
                        last_table = Some((key, g));
                        g
                    }
                };
                clock = clock.max(head.at_ns);
                let group = &mut groups[g];
                if !group.columns.push_view(job.stream, r.seq, symbol, view) {
                    done.undecodable += 1; // (its head read: not met)
                    return Ok(None);
                }
                group.rows += 1;
                group.last_ns = clock;
                Ok(Some(group.rows))
            });
            match opened {
                Ok(Some(Ok(Some(rows)))) => {
                    done.rows += 1;
                    if rows >= PART_ROWS && single {
                        failed.get_or_insert_with(|| {
                            anyhow::anyhow!("more than {PART_ROWS} rows: export to a directory")
                        });
                        return false;
                    }
                }
                Ok(Some(Ok(None))) | Ok(None) => {}
                _ => done.undecodable += 1,
            }
            true
        })?;
        if let Some(e) = failed.take() {
            return Err(e);
        }
        job.passed.fetch_add(n as u64, Ordering::Relaxed);
        // parts are written as they go, so that memory stays bounded: those that filled
        // up, and those that got no row for a day of the stream's time (a day's table of
        // a symbol once the next day is well under way; a late row begins a part of its
        // own; a month's candle, updated all along, stays)
        if !single {
            let idle = clock.saturating_sub(DAY_NS);
            for group in groups
                .iter_mut()
                .filter(|g| g.rows >= PART_ROWS || (g.rows > 0 && g.last_ns < idle))
            {
                let layout = Arc::clone(&layouts[&kind_of(group.part.kind)]);
                let expected = if group.rows >= PART_ROWS {
                    PART_ROWS
                } else {
                    16
                };
                let columns = std::mem::replace(&mut group.columns, Columns::new(layout, expected));
                let path = part_path(job.out, &group.part, group.written);
                write_parquet(&path, columns.finish(true), true)?;
                done.files.push(path);
                group.written += 1;
                group.rows = 0;
            }
        }
        if n == 0 {
            break;
        }
    }
    if single {
        if groups.len() > 1 {
            let mut names: Vec<String> = groups
                .iter()
                .map(|g| format!("{} {} {}", g.part.kind, g.part.symbol, g.part.date))
                .collect();
            names.sort();
            names.truncate(5);
            bail!(
                "the range holds {} tables (kinds, symbols or days: {}, ...): a .parquet file holds one — give a directory for a partitioned export, or narrow it with --kind, --symbol, --from and --to",
                groups.len(),
                names.join("; ")
            );
        }
        if let Some(group) = groups.pop() {
            write_parquet(job.out, group.columns.finish(true), false)?;
            done.files.push(job.out.to_owned());
        }
        return Ok(done);
    }
    for group in groups {
        if group.rows == 0 {
            continue;
        }
        let path = part_path(job.out, &group.part, group.written);
        write_parquet(&path, group.columns.finish(true), true)?;
        done.files.push(path);
    }
    done.files.sort();
    Ok(done)
}

/// The table of a record (made when it is the first of its kind, symbol and day).
fn table(
    index: &mut HashMap<PartKey, Vec<usize>>,
    by_part: &mut HashMap<Part, usize>,
    groups: &mut Vec<Group>,
    key: PartKey,
    head: &Head<'_>,
    columns: impl FnOnce() -> Columns,
) -> usize {
    let candidates = index.entry(key).or_default();
    if let Some(g) = candidates
        .iter()
        .copied()
        .find(|&g| groups[g].part.symbol_is(head.symbol, head.instrument_id))
    {
        return g;
    }
    let part = Part {
        kind: head.kind_name,
        symbol: head
            .symbol
            .map_or_else(|| format!("id-{}", head.instrument_id), str::to_owned),
        date: utc_date(head.at_ns),
    };
    // two instruments of one symbol share its table
    let g = *by_part.entry(part.clone()).or_insert_with(|| {
        groups.push(Group {
            part,
            columns: columns(),
            rows: 0,
            written: 0,
            last_ns: i64::MIN,
        });
        groups.len() - 1
    });
    candidates.push(g);
    g
}

impl Part {
    /// Whether a record with this symbol (or none) and instrument id belongs here.
    fn symbol_is(&self, symbol: Option<&str>, instrument_id: u32) -> bool {
        match symbol {
            Some(s) => self.symbol == s,
            // (records before their instrument's definition: rare)
            None => self
                .symbol
                .strip_prefix("id-")
                .is_some_and(|id| id == instrument_id.to_string()),
        }
    }
}

fn kind_of(name: &str) -> RecordKind {
    RecordKind::from_name(name).expect("a kind's own name")
}

/// `YYYY-MM-DD` of a time, UTC.
fn utc_date(ns: i64) -> String {
    let mut text = mdi_transport::time::utc_timestamp(ns);
    text.truncate(10);
    text
}

fn part_path(out: &Path, part: &Part, n: usize) -> PathBuf {
    out.join(format!("kind={}", part.kind))
        .join(format!("symbol={}", hive_escape(&part.symbol)))
        .join(format!("date={}", part.date))
        .join(format!("part-{n}.parquet"))
}

/// A value as a path segment: `/`, `=`, `%` and control characters percent-encoded.
fn hive_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if c == '/' || c == '=' || c == '%' || c == '\\' || c.is_control() {
            for b in c.to_string().bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Writes the batches; `partitioned`: without the columns the path names (kind,
/// symbol), as hive readers expect.
fn write_parquet(
    path: &Path,
    (schema, batches): (arrow_schema::SchemaRef, Vec<RecordBatch>),
    partitioned: bool,
) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let keep: Vec<usize> = (0..schema.fields().len())
        .filter(|&i| !(partitioned && matches!(schema.field(i).name().as_str(), "kind" | "symbol")))
        .collect();
    let batches = batches
        .iter()
        .map(|b| b.project(&keep))
        .collect::<Result<Vec<_>, _>>()?;
    let batches = narrow_decimals(batches)?;
    let Some(schema) = batches.first().map(RecordBatch::schema) else {
        return Ok(());
    };
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .set_max_row_group_row_count(Some(PART_ROWS))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_created_by(format!("mdarchive {}", env!("CARGO_PKG_VERSION")));
    // integers and 64-bit decimals (sequences, ids, times, prices) as deltas: a few
    // bits a row where zstd alone keeps most of their 8 bytes
    for field in schema.fields() {
        if matches!(
            field.data_type(),
            DataType::Int64 | DataType::UInt64 | DataType::Decimal128(..=18, _)
        ) {
            let column = ColumnPath::from(field.name().as_str());
            props = props
                .set_column_dictionary_enabled(column.clone(), false)
                .set_column_encoding(column, Encoding::DELTA_BINARY_PACKED);
        }
    }
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut writer = ArrowWriter::try_new(file, schema, Some(props.build()))?;
    for batch in &batches {
        writer.write(batch)?;
    }
    writer.close()?;
    Ok(())
}

/// Decimal columns at precision 18 where every value of the file fits (Parquet then
/// stores them as INT64, not 16-byte fixed-length): a price or quantity always does (its
/// mantissa is an i64); volumes (i128 mantissas) stay at 38 when they do not.
fn narrow_decimals(batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
    let Some(first) = batches.first() else {
        return Ok(batches);
    };
    let schema = first.schema();
    let fits = |a: &Decimal128Array| {
        a.iter()
            .flatten()
            .all(|v| v.unsigned_abs() < 10u128.pow(18))
    };
    let narrow: Vec<bool> = (0..schema.fields().len())
        .map(|i| {
            matches!(schema.field(i).data_type(), DataType::Decimal128(38, _))
                && batches.iter().all(|b| {
                    b.column(i)
                        .as_any()
                        .downcast_ref::<Decimal128Array>()
                        .is_some_and(fits)
                })
        })
        .collect();
    if !narrow.contains(&true) {
        return Ok(batches);
    }
    let fields: Vec<_> = schema
        .fields()
        .iter()
        .zip(&narrow)
        .map(|(f, &n)| match (n, f.data_type()) {
            (true, DataType::Decimal128(_, scale)) => Arc::new(
                f.as_ref()
                    .clone()
                    .with_data_type(DataType::Decimal128(18, *scale)),
            ),
            _ => Arc::clone(f),
        })
        .collect();
    let schema = Arc::new(arrow_schema::Schema::new(fields));
    batches
        .into_iter()
        .map(|b| {
            let columns = b
                .columns()
                .iter()
                .zip(&narrow)
                .map(|(c, &n)| match (n, c.data_type()) {
                    (true, DataType::Decimal128(_, scale)) => {
                        let a = c
                            .as_any()
                            .downcast_ref::<Decimal128Array>()
                            .expect("a decimal column")
                            .clone()
                            .with_precision_and_scale(18, *scale)?;
                        Ok(Arc::new(a) as ArrayRef)
                    }
                    _ => Ok(Arc::clone(c)),
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(RecordBatch::try_new(Arc::clone(&schema), columns)?)
        })
        .collect()
}
