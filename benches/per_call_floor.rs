//! The floor under one eval LM call (issue 15 item 1, target ≤ 0.10 ms of
//! client CPU per call): what the parts of a call cost alone, each in a bare
//! loop, so the eval's per-call CPU can be read against what no design on
//! this stack can go below.
//!
//!   cargo bench --bench per_call_floor -- URL [CALLS [LOOPS]]
//!
//! LOOPS: a comma-separated subset of the loops below (default all), e.g.
//! to count one loop's instructions under `valgrind --tool=cachegrind`.
//! URL is a chat-completions endpoint (`mock_lm.py` at 0 ms:
//! `http://127.0.0.1:PORT/v1/chat/completions`); `benches/per_call_floor.sh`
//! starts one and interleaves these loops with the eval itself. Prints the
//! CPU (user + system, `getrusage`) per call of:
//! - `hyper-util`: POSTs of a 1.3 KB chat body through hyper-util's pooled
//!   HTTP/1.1 client on a current-thread runtime, each reply read and parsed
//!   as JSON: the LM client's transport for plain HTTP without its retries,
//!   slots or cancellation (`src/lm/transport.rs`);
//! - `hyper-conn`: the same through one bare `hyper::client::conn::http1`
//!   connection (no pool, no connector): the least of a library client;
//! - `raw`: the same over a blocking `std::net::TcpStream` with HTTP/1.1
//!   written and read by hand (keep-alive, `content-length` only): what a
//!   hand-written client would cost, which the brief rules out in favour of
//!   a library;
//! - `rhai-metric`: `rhai/predict.rhai`'s 5-line metric called through
//!   `Engine::call_fn_with_options` on a plain `Engine::new()` (no host
//!   callbacks), arguments built fresh each call, no I/O.
//!
//! The two HTTP loops block on the server as the eval does, so they pay the
//! same cold caches; the metric loop runs hot.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// User + system CPU of this process so far, in seconds.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// A ChatAdapter-sized request body (about 1.3 KB) for question `i`.
fn body(i: usize) -> Vec<u8> {
    let system = "Your input fields are:\n1. `question` (str):\nYour output fields are:\n1. `answer` (str):\nAll interactions will be structured in the following way, with the appropriate values filled in.\n\n[[ ## question ## ]]\n{question}\n\n[[ ## answer ## ]]\n{answer}\n\n[[ ## completed ## ]]\nIn adhering to this structure, your objective is: \n        Given the fields `question`, produce the fields `answer`.".repeat(2);
    let user = format!("[[ ## question ## ]]\nWhat is question number {i}?\n\nRespond with the corresponding output fields, starting with the field `[[ ## answer ## ]]`, and then ending with the marker for `[[ ## completed ## ]]`.");
    serde_json::to_vec(&serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        "temperature": 0.0,
        "max_tokens": 1000,
    }))
    .expect("a JSON body")
}

/// Bytes of the replies' chat contents, so nothing is optimised away.
fn content_len(reply: &[u8]) -> usize {
    let value: serde_json::Value = serde_json::from_slice(reply).expect("a JSON reply");
    value["choices"][0]["message"]["content"]
        .as_str()
        .map_or(0, str::len)
}

fn hyper_util_loop(url: &str, bodies: &[Vec<u8>]) -> usize {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1)
        .build::<_, Full<Bytes>>(connector);
    let uri: hyper::Uri = url.parse().expect("a URL");
    let mut total = 0;
    for body in bodies {
        let request = hyper::Request::post(uri.clone())
            .header("content-type", "application/json")
            .header("authorization", "Bearer x")
            .body(Full::new(Bytes::from(body.clone())))
            .expect("a request");
        let reply = runtime.block_on(async {
            let response = client.request(request).await.expect("a reply");
            response
                .into_body()
                .collect()
                .await
                .expect("a body")
                .to_bytes()
        });
        total += content_len(&reply);
    }
    total
}

fn hyper_conn_loop(url: &str, bodies: &[Vec<u8>]) -> usize {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let uri: hyper::Uri = url.parse().expect("a URL");
    let host = uri.authority().expect("a host").to_string();
    runtime.block_on(async {
        let stream = tokio::net::TcpStream::connect(&host)
            .await
            .expect("a connection");
        stream.set_nodelay(true).expect("nodelay");
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .expect("a handshake");
        // Driven by the runtime while `block_on` waits on the replies.
        tokio::spawn(connection);
        let mut total = 0;
        for body in bodies {
            let request = hyper::Request::post(uri.path())
                .header("host", &host)
                .header("content-type", "application/json")
                .header("authorization", "Bearer x")
                .body(Full::new(Bytes::from(body.clone())))
                .expect("a request");
            let response = sender.send_request(request).await.expect("a reply");
            let reply = response
                .into_body()
                .collect()
                .await
                .expect("a body")
                .to_bytes();
            total += content_len(&reply);
        }
        total
    })
}

fn raw_loop(url: &str, bodies: &[Vec<u8>]) -> usize {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (host, path) = rest.split_once('/').expect("a path");
    let stream = TcpStream::connect(host).expect("a connection");
    stream.set_nodelay(true).expect("nodelay");
    let mut writer = stream.try_clone().expect("a second handle");
    let mut reader = BufReader::new(stream);
    let mut total = 0;
    let mut line = String::new();
    let mut request = Vec::new();
    let mut reply = Vec::new();
    for body in bodies {
        request.clear();
        write!(
            request,
            "POST /{path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n\
             authorization: Bearer x\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .expect("a head");
        request.extend_from_slice(body);
        writer.write_all(&request).expect("a write");
        let mut length = 0;
        loop {
            line.clear();
            reader.read_line(&mut line).expect("a header line");
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().expect("a length");
                }
            }
        }
        reply.resize(length, 0);
        reader.read_exact(&mut reply).expect("a body");
        total += content_len(&reply);
    }
    total
}

fn rhai_metric_loop(calls: usize) -> usize {
    let engine = rhai::Engine::new();
    let ast = engine
        .compile(
            "fn metric(example, pred, trace) {
                let a = `${pred.answer}`;
                a.trim();
                let b = `${example.answer}`;
                b.trim();
                a.to_lower() == b.to_lower()
            }",
        )
        .expect("the metric compiles");
    let mut right = 0;
    for i in 0..calls {
        let mut example = rhai::Map::new();
        example.insert("question".into(), format!("What is question {i}?").into());
        example.insert("answer".into(), " Paris ".into());
        let mut pred = rhai::Map::new();
        pred.insert("answer".into(), "paris".into());
        let options = rhai::CallFnOptions::new()
            .eval_ast(false)
            .rewind_scope(true);
        let args = (
            rhai::Dynamic::from_map(example),
            rhai::Dynamic::from_map(pred),
            rhai::Dynamic::UNIT,
        );
        let ok: bool = engine
            .call_fn_with_options(options, &mut rhai::Scope::new(), &ast, "metric", args)
            .expect("the metric runs");
        right += usize::from(ok);
    }
    right
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let url = args
        .first()
        .expect("usage: per_call_floor URL [CALLS [LOOPS]]")
        .clone();
    let calls: usize = args.get(1).map_or(2000, |n| n.parse().expect("CALLS"));
    let loops = args
        .get(2)
        .map_or("hyper-util,hyper-conn,raw,rhai-metric", String::as_str);
    let bodies: Vec<Vec<u8>> = (0..calls).map(body).collect();
    println!("loop calls cpu_us_per_call wall_us_per_call");
    let report = |name: &str, calls: usize, run: &dyn Fn() -> usize| {
        if !loops.split(',').any(|l| l == name) {
            return;
        }
        let (cpu, wall) = (cpu_seconds(), Instant::now());
        std::hint::black_box(run());
        let per = |s: f64| s * 1e6 / calls as f64;
        println!(
            "{name} {calls} {:.1} {:.1}",
            per(cpu_seconds() - cpu),
            per(wall.elapsed().as_secs_f64())
        );
    };
    report("hyper-util", calls, &|| hyper_util_loop(&url, &bodies));
    report("hyper-conn", calls, &|| hyper_conn_loop(&url, &bodies));
    report("raw", calls, &|| raw_loop(&url, &bodies));
    // Ten times as many: a call takes microseconds.
    report("rhai-metric", calls * 10, &|| rhai_metric_loop(calls * 10));
}
