//! The node's resolver (cargo feature `dns`): a hickory-server request handler over UDP and TCP on each given
//! address (in production every local network's gateway, port 53 — the nameserver of the tasks' resolv.conf).
//! Cluster names are answered from the [`SharedIndex`] for the asking task (the query's source address), with
//! A records of TTL 0 so nothing caches an answer the next map may withdraw; several addresses come rotated
//! per query. Unknown cluster-shaped names get NXDOMAIN at once; every other name is forwarded as it came (the
//! same bytes, UDP for UDP, TCP for TCP) to the host's resolvers, read from `/etc/resolv.conf` at start.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Edns, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::rdata::A;
use hickory_server::proto::rr::{RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use super::index::{Lookup, SharedIndex};

/// How long one upstream resolver gets to answer a forwarded query.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// The nameservers of a resolv.conf text (port 53), in order. Lines that are not `nameserver ADDR` are ignored;
/// a `nameserver` line whose address does not parse is reported with its line number.
pub fn parse_resolv_conf(text: &str, file: &str) -> (Vec<SocketAddr>, Vec<String>) {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(addr) = words.next() else {
            problems.push(format!("{file}:{}: nameserver without an address", i + 1));
            continue;
        };
        // a scoped IPv6 address (fe80::1%eth0) keeps only the address
        match addr.split('%').next().unwrap_or(addr).parse::<IpAddr>() {
            Ok(ip) => out.push(SocketAddr::new(ip, 53)),
            Err(_) => problems.push(format!(
                "{file}:{}: nameserver {addr:?} is not an IP address",
                i + 1
            )),
        }
    }
    (out, problems)
}

/// The host's resolvers from `path` (normally `/etc/resolv.conf`); a missing file means none.
pub fn host_resolvers(path: &str) -> (Vec<SocketAddr>, Vec<String>) {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_resolv_conf(&text, path),
        Err(e) => (
            Vec::new(),
            vec![format!(
                "{path}: {e}: names outside the cluster will not resolve"
            )],
        ),
    }
}

/// Answers queries from the index; forwards the rest.
pub struct Resolver {
    index: SharedIndex,
    upstreams: Vec<SocketAddr>,
    turn: AtomicUsize,
}

impl Resolver {
    /// A resolver over `index`, forwarding to `upstreams` (never to one of its own listen addresses: the
    /// caller leaves those out).
    pub fn new(index: SharedIndex, upstreams: Vec<SocketAddr>) -> Self {
        Resolver {
            index,
            upstreams,
            turn: AtomicUsize::new(0),
        }
    }

    /// The upstream's reply to the raw query, over TCP or UDP, from the first upstream that answers.
    async fn forward(&self, raw: &[u8], id: u16, tcp: bool) -> Option<Message> {
        for up in &self.upstreams {
            let reply = if tcp {
                tokio::time::timeout(UPSTREAM_TIMEOUT, forward_tcp(*up, raw)).await
            } else {
                tokio::time::timeout(UPSTREAM_TIMEOUT, forward_udp(*up, raw, id)).await
            };
            match reply {
                Ok(Ok(bytes)) => match Message::from_vec(&bytes) {
                    Ok(m) if m.metadata.id == id => return Some(m),
                    Ok(_) => tracing::debug!("resolver {up}: reply with another id"),
                    Err(e) => tracing::debug!("resolver {up}: undecodable reply: {e}"),
                },
                Ok(Err(e)) => tracing::debug!("resolver {up}: {e}"),
                Err(_) => tracing::debug!("resolver {up}: no answer within {UPSTREAM_TIMEOUT:?}"),
            }
        }
        None
    }
}

async fn forward_udp(up: SocketAddr, raw: &[u8], id: u16) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = match up {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = UdpSocket::bind(local).await?;
    sock.connect(up).await?;
    sock.send(raw).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = sock.recv(&mut buf).await?;
        // a reply to something else (a late answer to a reused port) is skipped
        if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn forward_tcp(up: SocketAddr, raw: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(up).await?;
    let len = u16::try_from(raw.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "query too long"))?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(raw);
    s.write_all(&framed).await?;
    let n = s.read_u16().await? as usize;
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).await?;
    Ok(buf)
}

fn response_edns(request: &Request) -> Option<Edns> {
    request.edns.as_ref().map(|req| {
        let mut e = Edns::new();
        e.set_max_payload(req.max_payload().max(512));
        e
    })
}

async fn reply_code<R: ResponseHandler>(
    request: &Request,
    code: ResponseCode,
    mut handle: R,
) -> ResponseInfo {
    let edns = response_edns(request);
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = code;
    metadata.recursion_available = true;
    let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
    let response = builder.build_no_records(metadata);
    match handle.send_response(response).await {
        Ok(info) => info,
        Err(e) => {
            tracing::debug!("resolver: sending a reply: {e}");
            let mut m = Metadata::new(request.metadata.id, MessageType::Response, OpCode::Query);
            m.response_code = ResponseCode::ServFail;
            ResponseInfo::from(hickory_server::proto::op::Header {
                metadata: m,
                counts: Default::default(),
            })
        }
    }
}

fn failed(request: &Request) -> ResponseInfo {
    let mut m = Metadata::new(request.metadata.id, MessageType::Response, OpCode::Query);
    m.response_code = ResponseCode::ServFail;
    ResponseInfo::from(hickory_server::proto::op::Header {
        metadata: m,
        counts: Default::default(),
    })
}

/// The request handler hickory's server runs: a shared [`Resolver`].
#[derive(Clone)]
pub struct Handler(pub Arc<Resolver>);

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let resolver = &self.0;
        if request.metadata.message_type != MessageType::Query
            || request.metadata.op_code != OpCode::Query
        {
            return reply_code(request, ResponseCode::NotImp, response_handle).await;
        }
        let Some(query) = request.queries.queries().first() else {
            return reply_code(request, ResponseCode::FormErr, response_handle).await;
        };
        let name = query.name().to_string();
        let found = resolver.index.current().lookup(request.src().ip(), &name);
        // per query: debug only (a busy task asks many times a second)
        tracing::debug!(
            "resolver: {} asks {name} {}: {found:?}",
            request.src(),
            query.query_type()
        );
        match found {
            Lookup::NoSuchName => {
                reply_code(request, ResponseCode::NXDomain, response_handle).await
            }
            Lookup::Found(addrs) => {
                let qtype = query.query_type();
                let owner = hickory_server::proto::rr::Name::from(query.name().clone());
                let mut records: Vec<Record> = Vec::new();
                if matches!(qtype, RecordType::A | RecordType::ANY) && !addrs.is_empty() {
                    let turn = resolver.turn.fetch_add(1, Ordering::Relaxed) % addrs.len();
                    for a in addrs[turn..].iter().chain(&addrs[..turn]) {
                        records.push(Record::from_rdata(owner.clone(), 0, RData::A(A(*a))));
                    }
                }
                let edns = response_edns(request);
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.authoritative = true;
                metadata.recursion_available = true;
                let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
                let response = builder.build(metadata, records.iter(), [], [], []);
                match response_handle.send_response(response).await {
                    Ok(info) => info,
                    Err(e) => {
                        tracing::debug!("resolver: sending a reply: {e}");
                        failed(request)
                    }
                }
            }
            Lookup::Outside => {
                let tcp = request.protocol() != hickory_server::net::xfer::Protocol::Udp;
                let Some(reply) = resolver
                    .forward(request.as_slice(), request.metadata.id, tcp)
                    .await
                else {
                    return reply_code(request, ResponseCode::ServFail, response_handle).await;
                };
                let mut metadata = reply.metadata;
                metadata.recursion_available = true;
                let builder = MessageResponseBuilder::new(&request.queries, reply.edns.as_ref());
                let response = builder.build(
                    metadata,
                    reply.answers.iter(),
                    reply.authorities.iter(),
                    [],
                    reply.additionals.iter(),
                );
                match response_handle.send_response(response).await {
                    Ok(info) => info,
                    Err(e) => {
                        tracing::debug!("resolver: sending a forwarded reply: {e}");
                        failed(request)
                    }
                }
            }
        }
    }
}

/// The resolver's listeners: one hickory server (UDP + TCP) per address.
pub struct DnsServers {
    handler: Handler,
    servers: BTreeMap<SocketAddr, Server<Handler>>,
}

impl DnsServers {
    /// No listener yet; `set_listeners` opens them.
    pub fn new(resolver: Resolver) -> Self {
        DnsServers {
            handler: Handler(Arc::new(resolver)),
            servers: BTreeMap::new(),
        }
    }

    /// The addresses listened on.
    pub fn listening(&self) -> Vec<SocketAddr> {
        self.servers.keys().copied().collect()
    }

    /// Listen on exactly `addrs` (UDP and TCP each): close the others, open the new ones. An address that cannot
    /// be bound (not yet on its bridge, port taken) is reported and tried again on the next call.
    pub async fn set_listeners(&mut self, addrs: &[SocketAddr]) -> Vec<String> {
        let mut problems = Vec::new();
        let gone: Vec<SocketAddr> = self
            .servers
            .keys()
            .filter(|a| !addrs.contains(a))
            .copied()
            .collect();
        for a in gone {
            if let Some(mut s) = self.servers.remove(&a) {
                if let Err(e) = s.shutdown_gracefully().await {
                    tracing::debug!("resolver on {a}: {e}");
                }
            }
        }
        for a in addrs {
            if self.servers.contains_key(a) {
                continue;
            }
            let udp = match UdpSocket::bind(a).await {
                Ok(s) => s,
                Err(e) => {
                    problems.push(format!("resolver: cannot listen on udp {a}: {e}"));
                    continue;
                }
            };
            let tcp = match TcpListener::bind(a).await {
                Ok(s) => s,
                Err(e) => {
                    problems.push(format!("resolver: cannot listen on tcp {a}: {e}"));
                    continue;
                }
            };
            let mut server = Server::new(self.handler.clone());
            server.register_socket(udp);
            server.register_listener(tcp, Duration::from_secs(5), 64);
            self.servers.insert(*a, server);
        }
        problems
    }

    /// Close every listener.
    pub async fn shutdown(&mut self) {
        let _ = self.set_listeners(&[]).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers_in_order_with_bad_lines_named() {
        let text = "# generated\nsearch example.org\nnameserver 127.0.0.53\nnameserver fe80::1%eth0 # scoped\n\
                    nameserver\nnameserver not-an-ip\noptions edns0\n";
        let (ns, problems) = parse_resolv_conf(text, "/etc/resolv.conf");
        assert_eq!(
            ns,
            vec![
                "127.0.0.53:53".parse().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
        assert_eq!(
            problems,
            vec![
                "/etc/resolv.conf:5: nameserver without an address".to_string(),
                "/etc/resolv.conf:6: nameserver \"not-an-ip\" is not an IP address".to_string(),
            ]
        );
        let (none, problems) = host_resolvers("/nonexistent/resolv.conf");
        assert!(none.is_empty());
        assert!(
            problems[0].starts_with("/nonexistent/resolv.conf: "),
            "{problems:?}"
        );
    }
}
