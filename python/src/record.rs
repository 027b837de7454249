//! Records as Python objects: the fields of `mdi_subscriber::fields` copied out of the
//! ring into owned values, turned into Python values only when an attribute is read
//! (decimals above all: a `decimal.Decimal` is made per access, never per record).

use mdi_subscriber::Event;
use mdi_subscriber::fields::{Field, Head, Value};
use mdi_subscriber::mdi_protocol::decimal::Decimal;
use mdi_subscriber::mdi_protocol::ring::WriterState;
use pyo3::exceptions::PyAttributeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

/// One field's value, owned.
#[derive(Debug, Clone)]
pub(crate) enum Owned {
    Str(Box<str>),
    /// Interned text (stream names, symbols): no copy.
    Static(&'static str),
    None,
    Dec(Decimal),
    Int(i64),
    UInt(u64),
    Bool(bool),
    Levels(Box<[(Decimal, Decimal)]>),
}

impl Owned {
    fn from_value(value: Value<'_>) -> Self {
        match value {
            Value::Str(s) | Value::MaybeStr(Some(s)) => Self::Str(s.into()),
            Value::MaybeStr(None) => Self::None,
            Value::Dec(d) => Self::Dec(d),
            Value::Int(n) => Self::Int(n),
            Value::UInt(n) => Self::UInt(n),
            Value::Bool(b) => Self::Bool(b),
            Value::Levels(levels) => Self::Levels(levels.decimals().collect()),
        }
    }

    fn to_python(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(match self {
            Self::Str(s) => PyString::new(py, s).into_any().unbind(),
            Self::Static(s) => PyString::new(py, s).into_any().unbind(),
            Self::None => py.None(),
            Self::Dec(d) => decimal(py, *d)?,
            Self::Int(n) => n.into_pyobject(py)?.into_any().unbind(),
            Self::UInt(n) => n.into_pyobject(py)?.into_any().unbind(),
            Self::Bool(b) => pyo3::types::PyBool::new(py, *b)
                .to_owned()
                .into_any()
                .unbind(),
            Self::Levels(levels) => {
                let items = levels
                    .iter()
                    .map(|(p, q)| {
                        PyTuple::new(py, [decimal(py, *p)?, decimal(py, *q)?]).map(Bound::unbind)
                    })
                    .collect::<PyResult<Vec<_>>>()?;
                PyList::new(py, items)?.into_any().unbind()
            }
        })
    }
}

/// `decimal.Decimal(text)`: exact, from the record's mantissa and exponent.
pub(crate) fn decimal(py: Python<'_>, d: Decimal) -> PyResult<Py<PyAny>> {
    static DECIMAL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let class = DECIMAL.get_or_try_init(py, || {
        py.import("decimal")?.getattr("Decimal").map(Bound::unbind)
    })?;
    class.call1(py, (d.text().as_str(),))
}

/// A record or an event (loss, restart, writer gone, ring replaced), owned and ready to
/// become a Python object.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    kind: &'static str,
    symbol: Option<&'static str>,
    instrument_id: u32,
    fields: Vec<(&'static str, Owned)>,
}

impl Item {
    /// A record's fields, as `mdtail --format jsonl` names them. `symbol` is the one the
    /// subscriber resolved (interned), or the definition's own.
    pub(crate) fn record(
        head: &Head<'_>,
        fields: &[Field<'_>],
        stream: &'static str,
        symbol: Option<&'static str>,
    ) -> Self {
        // a definition names its own symbol; the whole feed's status none
        let symbol = match head.symbol {
            Some(own) if head.kind_name == "instrument" => Some(mdi_subscriber::intern(own)),
            Some(_) => symbol,
            None => None,
        };
        Self {
            kind: head.kind_name,
            symbol,
            instrument_id: head.instrument_id,
            fields: fields
                .iter()
                .map(|f| {
                    let value = if f.name == "stream" {
                        Owned::Static(stream)
                    } else {
                        Owned::from_value(f.value)
                    };
                    (f.name, value)
                })
                .collect(),
        }
    }

    /// An event that is not a record: kinds `lost`, `restarted`, `writer_gone`,
    /// `replaced`.
    pub(crate) fn notice(event: &Event) -> Self {
        let (kind, fields) = match *event {
            Event::Lost {
                stream,
                from_seq,
                to_seq,
                count,
            } => (
                "lost",
                vec![
                    ("stream", Owned::Static(stream)),
                    ("from_seq", Owned::UInt(from_seq.0)),
                    ("to_seq", Owned::UInt(to_seq.0)),
                    ("count", Owned::UInt(count)),
                ],
            ),
            Event::Restarted {
                stream,
                epoch,
                previous_epoch,
                writer_pid,
            } => (
                "restarted",
                vec![
                    ("stream", Owned::Static(stream)),
                    ("epoch", Owned::UInt(epoch)),
                    ("previous_epoch", Owned::UInt(previous_epoch)),
                    ("writer_pid", Owned::UInt(writer_pid.into())),
                ],
            ),
            Event::WriterGone { stream, state } => (
                "writer_gone",
                vec![
                    ("stream", Owned::Static(stream)),
                    ("state", Owned::Static(writer_state(state))),
                ],
            ),
            Event::Replaced { stream } => ("replaced", vec![("stream", Owned::Static(stream))]),
            // records come through `record`
            Event::Record { stream, .. } => ("record", vec![("stream", Owned::Static(stream))]),
        };
        Self {
            kind,
            symbol: None,
            instrument_id: 0,
            fields,
        }
    }

    pub(crate) fn kind(&self) -> &'static str {
        self.kind
    }

    pub(crate) fn symbol(&self) -> Option<&'static str> {
        self.symbol
    }

    pub(crate) fn instrument_id(&self) -> u32 {
        self.instrument_id
    }

    pub(crate) fn fields(&self) -> &[(&'static str, Owned)] {
        &self.fields
    }
}

fn writer_state(state: WriterState) -> &'static str {
    match state {
        WriterState::Alive => "alive",
        WriterState::Closed => "closed",
        WriterState::Dead => "dead",
        WriterState::Superseded => "superseded",
    }
}

/// A record from a stream, or an event of the stream (`kind` says which: `trade`,
/// `quote`, `book`, `kline`, `status`, `instrument`; `lost`, `restarted`,
/// `writer_gone`, `replaced`). Its attributes are the fields `mdtail --format jsonl`
/// prints for its kind: prices, quantities and volumes as exact `decimal.Decimal`
/// (made when read), and for each of them `<name>_f64` as a float.
#[pyclass(module = "mdi", name = "Record", frozen)]
pub(crate) struct PyRecord {
    item: Item,
}

impl PyRecord {
    pub(crate) fn new(item: Item) -> Self {
        Self { item }
    }

    fn field(&self, name: &str) -> Option<&Owned> {
        self.item
            .fields
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    }
}

#[pymethods]
impl PyRecord {
    /// The kind: `trade`, `quote`, `book`, `kline`, `status`, `instrument`, or an
    /// event's: `lost`, `restarted`, `writer_gone`, `replaced`.
    #[getter]
    fn kind(&self) -> &'static str {
        self.item.kind
    }

    /// The instrument's symbol; `None` when the stream has not named it (or for the
    /// whole feed's status and for events).
    #[getter]
    fn symbol(&self) -> Option<&'static str> {
        self.item.symbol
    }

    /// The instrument id (0 for the whole feed and for events).
    #[getter]
    fn instrument_id(&self) -> u32 {
        self.item.instrument_id
    }

    /// True for events that are not records (`lost`, `restarted`, `writer_gone`,
    /// `replaced`).
    #[getter]
    fn is_event(&self) -> bool {
        matches!(
            self.item.kind,
            "lost" | "restarted" | "writer_gone" | "replaced"
        )
    }

    /// The field names after `kind`, `symbol` and `instrument_id`, in order.
    #[getter]
    fn fields<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, self.item.fields.iter().map(|(n, _)| *n))
    }

    fn __getattr__(&self, py: Python<'_>, name: &str) -> PyResult<Py<PyAny>> {
        if let Some(value) = self.field(name) {
            return value.to_python(py);
        }
        if let Some(base) = name.strip_suffix("_f64")
            && let Some(Owned::Dec(d)) = self.field(base)
        {
            return Ok(d.to_f64().into_pyobject(py)?.into_any().unbind());
        }
        Err(PyAttributeError::new_err(format!(
            "a {} record has no field {name:?} (it has: kind, symbol, instrument_id, {})",
            self.item.kind,
            self.item
                .fields
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }

    /// The record as a dict, keys in `mdtail --format jsonl`'s order, decimals as
    /// `decimal.Decimal`.
    fn as_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        dict.set_item("kind", self.item.kind)?;
        dict.set_item("symbol", self.item.symbol)?;
        if !self.is_event() {
            dict.set_item("instrument_id", self.item.instrument_id)?;
        }
        for (name, value) in &self.item.fields {
            dict.set_item(*name, value.to_python(py)?)?;
        }
        Ok(dict)
    }

    fn __dir__(&self) -> Vec<&'static str> {
        let mut names = vec!["kind", "symbol", "instrument_id", "fields", "as_dict"];
        for (name, value) in &self.item.fields {
            names.push(name);
            if let Owned::Dec(_) = value {
                names.push(f64_name(name));
            }
        }
        names
    }

    fn __repr__(&self) -> String {
        let mut text = format!("<mdi.Record {}", self.item.kind);
        if let Some(symbol) = self.item.symbol {
            text.push(' ');
            text.push_str(symbol);
        }
        for (name, value) in &self.item.fields {
            let shown = match value {
                Owned::Str(s) => format!("{s:?}"),
                Owned::Static(s) => format!("{s:?}"),
                Owned::None => "None".into(),
                Owned::Dec(d) => d.text().as_str().to_owned(),
                Owned::Int(n) => n.to_string(),
                Owned::UInt(n) => n.to_string(),
                Owned::Bool(b) => if *b { "True" } else { "False" }.into(),
                Owned::Levels(l) => format!("[{} levels]", l.len()),
            };
            text.push_str(&format!(" {name}={shown}"));
        }
        text.push('>');
        text
    }
}

/// `"<name>_f64"` for the decimal fields' names, as static strings.
fn f64_name(name: &str) -> &'static str {
    mdi_subscriber::intern(&format!("{name}_f64"))
}
