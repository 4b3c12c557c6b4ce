//! Every mio token the master registers, encoded and decoded in this one place: the top byte
//! says what kind of source it is, the rest carries its id.

use crate::model::ConnId;

const KIND_SHIFT: u32 = 56;
const ID_MASK: u64 = (1 << KIND_SHIFT) - 1;

/// An HTTP API connection's id (never reused while the node runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ApiConnId(pub u64);

/// A worker process's generation: each spawn gets a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Generation(pub u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    WsListener,
    ApiListener,
    Udp,
    Signals,
    /// The cluster subscriber's channel.
    Subscriber,
    /// A task worker's channel.
    Worker(Generation),
    Ws(ConnId),
    Api(ApiConnId),
}

impl Token {
    fn parts(self) -> (u64, u64) {
        match self {
            Token::WsListener => (1, 0),
            Token::ApiListener => (2, 0),
            Token::Udp => (3, 0),
            Token::Signals => (4, 0),
            Token::Subscriber => (5, 0),
            Token::Worker(g) => (6, g.0),
            Token::Ws(c) => (7, c.0),
            Token::Api(a) => (8, a.0),
        }
    }

    pub fn decode(token: mio::Token) -> Option<Token> {
        let raw = token.0 as u64;
        let id = raw & ID_MASK;
        Some(match raw >> KIND_SHIFT {
            1 => Token::WsListener,
            2 => Token::ApiListener,
            3 => Token::Udp,
            4 => Token::Signals,
            5 => Token::Subscriber,
            6 => Token::Worker(Generation(id)),
            7 => Token::Ws(ConnId(id)),
            8 => Token::Api(ApiConnId(id)),
            _ => return None,
        })
    }
}

impl From<Token> for mio::Token {
    fn from(t: Token) -> mio::Token {
        let (kind, id) = t.parts();
        mio::Token(((kind << KIND_SHIFT) | (id & ID_MASK)) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_token_decodes_to_itself() {
        let all = [
            Token::WsListener,
            Token::ApiListener,
            Token::Udp,
            Token::Signals,
            Token::Subscriber,
            Token::Worker(Generation(7)),
            Token::Ws(ConnId(1)),
            Token::Ws(ConnId(ID_MASK)),
            Token::Api(ApiConnId(3)),
        ];
        for t in all {
            assert_eq!(Token::decode(t.into()), Some(t));
        }
        assert_eq!(Token::decode(mio::Token(0)), None);
    }
}
