//! Outside review B (issue 14): the SPOP byte budget and the stopping drain, attacked
//! from the SPOP port with raw TCP clients. Each test says what it shows.

mod common;

use std::time::Duration;

use common::*;
use stagedoor::connection::EngineConfig;
use stagedoor::spop::TypedData;
use tokio::io::AsyncWriteExt;

/// After HELLO, a frame that is never finished: one byte every 300 ms keeps the
/// idle timer (1 s) from firing, so its 16 KiB buffer is held for as long as the
/// peer likes. Two such connections take more than the admission limit (30 000 of
/// 40 000), and every new connection (HAProxy's included) gets status 13.
/// Wanted: a frame that has started must finish within a bound (here the idle
/// timeout), whatever trickles in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_frame_does_not_hold_its_buffer_forever() {
    let cfg = EngineConfig {
        buffer_budget: 40_000,
        idle_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let s = start(cfg, 100).await;
    let mut slow = Vec::new();
    for _ in 0..2 {
        let mut c = Client::handshake(s.addr).await;
        let mut head = 16_380u32.to_be_bytes().to_vec();
        head.extend([3, 0, 0, 0, 1, 1, 1]);
        // Past the first 4 KiB, so the buffer grows to the whole frame.
        head.extend([0u8; 5000]);
        c.send(&head).await;
        slow.push(c);
    }
    // Trickle for 4 idle timeouts.
    let trickle = async {
        for _ in 0..14 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            for c in &mut slow {
                if c.stream.write_all(&[0]).await.is_err() {
                    return;
                }
            }
        }
    };
    trickle.await;
    for c in &mut slow {
        let f = c.recv().await.expect("AGENT-DISCONNECT");
        assert_eq!(
            disconnect_status(&f),
            Some(2),
            "closed as idle (timeout): {f:?}"
        );
    }
    let held = s.stats.buffers.held();
    let mut fresh = Client::connect(s.addr).await;
    fresh.send(&hello_26()).await;
    let f = fresh.recv().await;
    assert_eq!(
        disconnect_status(f.as_ref().unwrap()),
        None,
        "a new connection was refused (13) while two trickled frames held {held} bytes \
         for 4 idle timeouts"
    );
    assert_eq!(s.stats.buffers.peak(), 2 * 16_384);
}

/// The stop's hard limit (grace + 1 s) is documented to close a connection "anyway";
/// a peer that always has bytes waiting when the reader asks keeps it open: the
/// `DrainStep::Close` path reads first and continues on bytes, forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_pauses_is_closed_at_the_hard_stop() {
    let cfg = EngineConfig {
        shutdown_grace: Duration::from_millis(300),
        drain_quiet: Duration::from_secs(30),
        ..Default::default()
    };
    let s = start(cfg, 100).await;
    let c = Client::handshake(s.addr).await;
    let (mut rd, mut wr) = c.stream.into_split();
    // Writer: NOTIFYs back to back, as fast as the socket takes them.
    let frame = notify(
        1,
        1,
        vec![stagedoor::spop::Arg::new("id", TypedData::Int64(1))],
    );
    let burst: Vec<u8> = frame
        .iter()
        .copied()
        .cycle()
        .take(frame.len() * 200)
        .collect();
    let writer = tokio::spawn(async move { while wr.write_all(&burst).await.is_ok() {} });
    // Reader: every frame until AGENT-DISCONNECT or EOF; when it came.
    let reader = tokio::spawn(async move {
        let mut buf = bytes::BytesMut::new();
        loop {
            while let Some(n) = stagedoor::spop::frame::read_frame(&buf, u32::MAX).unwrap() {
                let b = buf.split_to(n);
                let f = stagedoor::spop::Frame::decode(&b[4..]).unwrap();
                if disconnect_status(&own(f)).is_some() {
                    return tokio::time::Instant::now();
                }
            }
            use tokio::io::AsyncReadExt;
            match rd.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return tokio::time::Instant::now(),
                Ok(_) => {}
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stop = tokio::time::Instant::now();
    s.shutdown.cancel();
    // grace 0.3 s + HARD_STOP 1 s + the last ACKs: 3 s is plenty.
    let closed = tokio::time::timeout(Duration::from_secs(3), reader).await;
    writer.abort();
    let closed = closed.expect("still open 3 s after the stop (grace 0.3 s, hard stop 1 s)");
    assert!(closed.unwrap() - stop < Duration::from_secs(3));
}
