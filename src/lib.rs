//! wspush: a WebSocket message-push server. A master process runs one mio event loop over every
//! socket; task worker processes do whatever may block. See README.md.

pub mod config;
pub mod daemon;
pub mod ids;
pub mod ipc;
pub mod logging;
pub mod master;
pub mod model;
pub mod net;
pub mod protocol;
pub mod reload;
pub mod secret;
pub mod status;
pub mod store;
pub mod systemd;
pub mod trim;
pub mod worker;
