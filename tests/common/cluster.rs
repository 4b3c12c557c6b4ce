//! A cluster for tests: nodes sharing one throwaway Redis and one throwaway MariaDB.

use super::services::{MariaDb, RedisServer};
use super::{wait_for, Client, Server, ServerBuilder};
use serde_json::Value;

/// Nodes sharing one Redis and one MariaDB; node `i` (from 0) has node_id `i + 1`. The nodes
/// come first so that they stop before the services they use.
pub struct Cluster {
    pub nodes: Vec<Server>,
    pub redis: RedisServer,
    pub db: MariaDb,
}

pub fn start_cluster(tag: &str, n: usize) -> Cluster {
    let redis = RedisServer::start();
    let db = MariaDb::start();
    let nodes = (1..=n)
        .map(|i| {
            ServerBuilder::new(&format!("{tag}-n{i}"))
                .set("node_id", &i.to_string())
                .extra(&format!(
                    "[redis]\nurl = \"{}\"\nnode_ttl = 3\n[mysql]\nurl = \"{}\"",
                    redis.url(),
                    db.url()
                ))
                .start()
        })
        .collect();
    let cluster = Cluster { nodes, redis, db };
    for (i, node) in cluster.nodes.iter().enumerate() {
        wait_for(&format!("node {} to subscribe", i + 1), || {
            (node.try_stats()?["cluster"]["subscribed"] == true).then_some(())
        });
    }
    cluster
}

impl Cluster {
    /// Logs `uid`/`source` in on node `node` and waits until Redis presence names that
    /// connection: from then on the other nodes route to it.
    pub fn login(&self, node: usize, uid: u64, source: &str) -> Client {
        let server = &self.nodes[node];
        let client = server.login(uid, source);
        let (port, fd) = (server.ws_port, client.fd);
        wait_for(&format!("presence of {uid}/{source} in Redis"), || {
            let entry = self.presence(uid)?;
            let e = &entry[source];
            (e["port"] == port && e["fd"] == fd).then_some(())
        });
        client
    }

    /// `ws_clientInfo` field `uid`, as JSON; None when absent.
    pub fn presence(&self, uid: u64) -> Option<Value> {
        let reply = self.redis.cmd(&["HGET", "ws_clientInfo", &uid.to_string()]);
        reply
            .as_string()
            .map(|s| serde_json::from_str(&s).expect("ws_clientInfo holds JSON"))
    }
}
