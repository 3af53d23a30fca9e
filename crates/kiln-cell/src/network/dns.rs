//! A DNS relay on the bridge's gateway address: containers' `resolv.conf`
//! points at it, and it forwards each UDP query to the host's resolvers
//! and the first answer back. The host's resolver is often on loopback
//! (`127.0.0.53`), which a container cannot reach; the relay, in the
//! host's namespace, can. It parses nothing but the query id, which a
//! reply must match.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long one upstream gets to answer before the next is asked.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Queries relayed at once; beyond it queries are dropped (the client
/// retries), so a flood costs bounded memory.
const MAX_IN_FLIGHT: usize = 256;
/// The largest UDP DNS message (EDNS0 allows up to 64 KiB).
const MAX_MESSAGE: usize = 65_535;

/// The host's resolvers from a `resolv.conf` text, port 53.
pub fn nameservers(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next())?
        })
        .filter_map(|ip| ip.parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// Serves until `stop`; returns once the socket is closed (every query
/// in flight has let go of it).
pub async fn serve(socket: UdpSocket, upstreams: Vec<SocketAddr>, stop: CancellationToken) {
    let queries = TaskTracker::new();
    relay(socket, upstreams, &queries, stop).await;
    queries.close();
    queries.wait().await;
}

async fn relay(
    socket: UdpSocket,
    upstreams: Vec<SocketAddr>,
    queries: &TaskTracker,
    stop: CancellationToken,
) {
    let socket = Arc::new(socket);
    let upstreams: Arc<[SocketAddr]> = upstreams.into();
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let (n, client) = tokio::select! {
            _ = stop.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(error) => {
                    // ICMP errors from earlier replies surface here; the
                    // socket itself is fine.
                    tracing::debug!(%error, "dns relay receive");
                    continue;
                }
            },
        };
        if n < 12 {
            continue;
        }
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!(%client, "dns relay busy; dropping query");
            continue;
        };
        let query = buf[..n].to_vec();
        let (socket, upstreams, stop) = (socket.clone(), upstreams.clone(), stop.clone());
        queries.spawn(async move {
            let _permit = permit;
            tokio::select! {
                _ = stop.cancelled() => {}
                answer = ask(&upstreams, &query) => if let Some(answer) = answer {
                    let _ = socket.send_to(&answer, client).await;
                },
            }
        });
    }
}

/// The first matching answer from the upstreams, in order.
async fn ask(upstreams: &[SocketAddr], query: &[u8]) -> Option<Vec<u8>> {
    for upstream in upstreams {
        let bind: SocketAddr = if upstream.is_ipv4() {
            "0.0.0.0:0".parse().ok()?
        } else {
            "[::]:0".parse().ok()?
        };
        let Ok(socket) = UdpSocket::bind(bind).await else {
            continue;
        };
        if socket.connect(upstream).await.is_err() || socket.send(query).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; MAX_MESSAGE];
        let answer = tokio::time::timeout(UPSTREAM_TIMEOUT, async {
            loop {
                let n = socket.recv(&mut buf).await.ok()?;
                // Same id: an answer to this query, not a stray datagram.
                if n >= 12 && buf[..2] == query[..2] {
                    return Some(buf[..n].to_vec());
                }
            }
        })
        .await;
        if let Ok(Some(answer)) = answer {
            return Some(answer);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nameservers_from_resolv_conf() {
        let text = "# comment\nsearch example\nnameserver 127.0.0.53\nnameserver  10.0.0.2 \nnameserver bogus\nnameserver ::1\n";
        assert_eq!(
            nameservers(text),
            [
                "127.0.0.53:53".parse().unwrap(),
                "10.0.0.2:53".parse().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
    }

    #[tokio::test]
    async fn relays_a_query_to_the_upstream_and_the_answer_back() {
        // An upstream on loopback that answers every query with its own
        // bytes and the QR bit set.
        let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let upstream_addr = upstream.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = upstream.recv_from(&mut buf).await {
                let mut answer = buf[..n].to_vec();
                answer[2] |= 0x80;
                let _ = upstream.send_to(&answer, from).await;
            }
        });
        let relay = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let relay_addr = relay.local_addr().unwrap();
        let stop = CancellationToken::new();
        // A dead upstream first: the relay moves on to the next one.
        let dead = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let dead_addr = dead.local_addr().unwrap();
        drop(dead);
        tokio::spawn(serve(relay, vec![dead_addr, upstream_addr], stop.clone()));

        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let query = [
            0x12, 0x34, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 0, 0, 1, 0, 1,
        ];
        client.send_to(&query, relay_addr).await.unwrap();
        let mut buf = [0u8; 512];
        let (n, _) = tokio::time::timeout(Duration::from_secs(10), client.recv_from(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert_eq!(&buf[..2], &[0x12, 0x34]);
        assert_eq!(buf[2] & 0x80, 0x80);
        assert_eq!(n, query.len());
        stop.cancel();
    }
}
