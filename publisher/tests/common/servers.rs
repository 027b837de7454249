//! Local TLS servers standing in for Binance: a WebSocket server playing scripted
//! connections and a REST server (self-signed certificate; clients trust its CA file).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use mdi_transport::wall_clock_ns;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::Message;

/// A self-signed certificate for 127.0.0.1: the acceptor and the CA file for clients.
pub fn tls(dir: &std::path::Path) -> (TlsAcceptor, std::path::PathBuf) {
    let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, key.cert.pem()).unwrap();
    let cert = key.cert.der().clone();
    let private =
        rustls::pki_types::PrivateKeyDer::try_from(key.signing_key.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], private)
        .unwrap();
    (TlsAcceptor::from(Arc::new(config)), ca)
}

/// What a scripted connection does.
#[derive(Clone, Debug)]
pub enum Step {
    Send(String),
    Ping(&'static str),
    Pause(u64),
    /// Drop the TCP connection without a close frame.
    Drop,
    /// Send frames made by the closure every `ms` until the client closes.
    Stream {
        every_ms: u64,
    },
}

/// What the servers saw.
#[derive(Default, Debug)]
pub struct Seen {
    pub connections: u64,
    pub pongs: Vec<String>,
    /// Connections that the client closed with a close frame.
    pub closed_by_client: u64,
    pub requests: Vec<String>,
}

pub type Scripts = Arc<dyn Fn(u64) -> Vec<Step> + Send + Sync>;
/// The n-th frame (from 1) connection k streams.
pub type Streamer = Arc<dyn Fn(u64, u64) -> String + Send + Sync>;

/// Serves WebSocket connections on TLS: connection k (from 1) plays `scripts(k)`.
pub fn ws_server(
    acceptor: TlsAcceptor,
    scripts: Scripts,
    streamer: Streamer,
    seen: Arc<Mutex<Seen>>,
) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let mut k = 0;
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                k += 1;
                seen.lock().unwrap().connections += 1;
                let (acceptor, script, streamer, seen) = (acceptor.clone(), scripts(k), Arc::clone(&streamer), Arc::clone(&seen));
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let Ok(mut ws) = tokio_tungstenite::accept_async(tls).await else { return };
                    for step in script {
                        match step {
                            Step::Send(text) => {
                                if ws.send(Message::Text(text.into())).await.is_err() {
                                    return;
                                }
                            }
                            Step::Ping(payload) => {
                                let _ = ws.send(Message::Ping(payload.as_bytes().to_vec().into())).await;
                                // the pong must come back
                                let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
                                while let Ok(Some(Ok(message))) = tokio::time::timeout_at(deadline, ws.next()).await {
                                    if let Message::Pong(p) = message {
                                        seen.lock().unwrap().pongs.push(String::from_utf8_lossy(&p).into_owned());
                                        break;
                                    }
                                }
                            }
                            Step::Pause(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                            Step::Drop => return, // dropping the stream: no close frame
                            Step::Stream { every_ms } => {
                                let mut n = 0;
                                loop {
                                    tokio::select! {
                                        message = ws.next() => match message {
                                            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                                                seen.lock().unwrap().closed_by_client += 1;
                                                return;
                                            }
                                            _ => {}
                                        },
                                        _ = tokio::time::sleep(Duration::from_millis(every_ms)) => {
                                            n += 1;
                                            if ws.send(Message::Text(streamer(k, n).into())).await.is_err() {
                                                return;
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    // keep the connection open (silent) until the client goes
                    while let Some(Ok(message)) = ws.next().await {
                        if matches!(message, Message::Close(_)) {
                            seen.lock().unwrap().closed_by_client += 1;
                            break;
                        }
                    }
                });
            }
        });
    });
    addr
}

/// The body for the n-th request, given its request line.
pub type Responder = Arc<dyn Fn(u64, &str) -> String + Send + Sync>;

/// A REST server on TLS answering the n-th request (line `GET /path HTTP/1.1`) with
/// `respond(n, line)`.
pub fn rest_server(
    acceptor: TlsAcceptor,
    respond: Responder,
    seen: Arc<Mutex<Seen>>,
) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let count = Arc::new(AtomicU64::new(0));
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let (acceptor, respond, seen, count) = (acceptor.clone(), Arc::clone(&respond), Arc::clone(&seen), Arc::clone(&count));
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let line = String::from_utf8_lossy(&request).lines().next().unwrap_or_default().to_owned();
                    let body = respond(count.fetch_add(1, Ordering::SeqCst) + 1, &line);
                    seen.lock().unwrap().requests.push(line);
                    let response = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(response.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
    });
    addr
}

/// A trade frame stamped now (the feed's timer closes candles by the local clock, so
/// the venue's must be close to it, as Binance's is).
pub fn trade(id: u64) -> String {
    let t = wall_clock_ns() / 1_000_000;
    format!(
        r#"{{"stream":"btcusdt@trade","data":{{"e":"trade","E":{t},"s":"BTCUSDT","t":{id},"p":"83034.29000000","q":"0.00062000","T":{t},"m":true,"M":true}}}}"#
    )
}
