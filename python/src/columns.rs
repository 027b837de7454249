//! The Arrow batches handed to Python: columns built by `mdi_subscriber::columns`,
//! exported through the Arrow PyCapsule interface so that polars and pyarrow take the
//! buffers without a copy.

use std::sync::Arc;

use arrow_array::ffi_stream::FFI_ArrowArrayStream;
use arrow_array::{RecordBatch, RecordBatchIterator};
use arrow_schema::SchemaRef;
use mdi_subscriber::columns::Cell;
pub(crate) use mdi_subscriber::columns::{Columns, Layout};
use mdi_subscriber::fields::Value;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyCapsule;

use crate::record::{Item, Owned};

/// Appends a record already copied out for an object (`Subscriber.next` polled it
/// before a batch was asked for).
pub(crate) fn push_item(columns: &mut Columns, item: &Item) {
    columns.push_cells(
        item.kind(),
        item.symbol(),
        item.instrument_id(),
        item.fields().iter().map(|(_, value)| match value {
            Owned::Str(s) => Cell::Value(Value::Str(s)),
            Owned::Static(s) => Cell::Value(Value::Str(s)),
            Owned::None => Cell::Null,
            Owned::Dec(d) => Cell::Value(Value::Dec(*d)),
            Owned::Int(n) => Cell::Value(Value::Int(*n)),
            Owned::UInt(n) => Cell::Value(Value::UInt(*n)),
            Owned::Bool(b) => Cell::Value(Value::Bool(*b)),
            Owned::Levels(levels) => Cell::Levels(levels),
        }),
    );
}

/// A batch of records as Arrow columns. Polars (`polars.DataFrame(batch)`) and pyarrow
/// (`pyarrow.table(batch)`) take it through the Arrow PyCapsule interface without a
/// copy; `mdi.read` and `Subscriber.poll_batch` hand back a polars DataFrame made so.
#[pyclass(module = "mdi", name = "ArrowBatch", frozen)]
pub(crate) struct ArrowBatch {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
}

impl ArrowBatch {
    pub(crate) fn new((schema, batches): (SchemaRef, Vec<RecordBatch>)) -> Self {
        Self { schema, batches }
    }
}

#[pymethods]
impl ArrowBatch {
    /// Rows in the batch.
    #[getter]
    fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    /// Column names, in order.
    #[getter]
    fn column_names(&self) -> Vec<String> {
        self.schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }

    fn __len__(&self) -> usize {
        self.num_rows()
    }

    /// The Arrow PyCapsule interface: a stream of the batch's chunks (record batches of
    /// up to 65 536 rows, one schema).
    #[pyo3(signature = (requested_schema = None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        if requested_schema.is_some_and(|s| !s.is_none()) {
            return Err(PyValueError::new_err(
                "mdi batches are exported in their own schema only (cast afterwards)",
            ));
        }
        let reader = RecordBatchIterator::new(
            self.batches.clone().into_iter().map(Ok),
            Arc::clone(&self.schema),
        );
        let stream = FFI_ArrowArrayStream::new(Box::new(reader));
        PyCapsule::new_with_value(py, stream, c"arrow_array_stream")
    }
}
