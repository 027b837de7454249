//! iceoryx2 publish/subscribe as a peer: sized so that it never drops (no overflow,
//! the publisher retries until every subscriber has room).

use anyhow::{Result, anyhow};
use iceoryx2::prelude::*;

use crate::ring::{Receive, Send};

/// Subscriber queue depth, and the service's maximum.
const BUFFER: usize = 4096;
/// Readers a benchmark may attach.
const MAX_SUBSCRIBERS: usize = 8;

fn err(e: impl std::fmt::Debug) -> anyhow::Error {
    anyhow!("iceoryx2: {e:?}")
}

type Service =
    iceoryx2::service::port_factory::publish_subscribe::PortFactory<ipc::Service, [u8], ()>;

fn open_service(node: &Node<ipc::Service>, name: &str) -> Result<Service> {
    let name: ServiceName = name.try_into().map_err(err)?;
    node.service_builder(&name)
        .publish_subscribe::<[u8]>()
        .max_subscribers(MAX_SUBSCRIBERS)
        .max_publishers(1)
        .history_size(0)
        .subscriber_max_buffer_size(BUFFER)
        .enable_safe_overflow(false)
        .open_or_create()
        .map_err(err)
}

fn node() -> Result<Node<ipc::Service>> {
    set_log_level(LogLevel::Error);
    NodeBuilder::new().create::<ipc::Service>().map_err(err)
}

pub struct Sender {
    publisher: iceoryx2::port::publisher::Publisher<ipc::Service, [u8], ()>,
    _service: Service,
    _node: Node<ipc::Service>,
}

impl Sender {
    pub fn create(name: &str, size: usize) -> Result<Self> {
        let node = node()?;
        let service = open_service(&node, name)?;
        let publisher = service
            .publisher_builder()
            .initial_max_slice_len(size.max(16))
            .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
            .create()
            .map_err(err)?;
        Ok(Self {
            publisher,
            _service: service,
            _node: node,
        })
    }
}

impl Send for Sender {
    #[inline]
    fn send(&mut self, message: &[u8]) -> Result<()> {
        let sample = self
            .publisher
            .loan_slice_uninit(message.len())
            .map_err(err)?;
        sample.write_from_slice(message).send().map_err(err)?;
        Ok(())
    }
}

pub struct Receiver {
    subscriber: iceoryx2::port::subscriber::Subscriber<ipc::Service, [u8], ()>,
    _service: Service,
    _node: Node<ipc::Service>,
}

impl Receiver {
    pub fn open(name: &str) -> Result<Self> {
        let node = node()?;
        let service = open_service(&node, name)?;
        let subscriber = service
            .subscriber_builder()
            .buffer_size(BUFFER)
            .create()
            .map_err(err)?;
        Ok(Self {
            subscriber,
            _service: service,
            _node: node,
        })
    }
}

impl Receive for Receiver {
    #[inline]
    fn poll(&mut self, on_message: &mut dyn FnMut(&[u8])) -> Result<usize> {
        let mut n = 0;
        while let Some(sample) = self.subscriber.receive().map_err(err)? {
            on_message(sample.payload());
            n += 1;
            if n == 256 {
                break;
            }
        }
        Ok(n)
    }

    fn lost(&self) -> u64 {
        // No overflow: iceoryx2 blocks the publisher instead of dropping.
        0
    }
}
