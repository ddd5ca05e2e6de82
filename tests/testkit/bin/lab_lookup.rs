//! `lab-lookup NAME:PORT`: prints `resolved ADDR` for each address
//! `tokio::net::lookup_host` finds for `NAME:PORT`. The lab's test runs it inside a
//! network namespace, to see which hosts file a process there reads.

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let target = std::env::args()
        .nth(1)
        .expect("usage: lab-lookup NAME:PORT");
    for addr in tokio::net::lookup_host(target.as_str())
        .await
        .expect("lookup")
    {
        println!("resolved {addr}");
    }
}
