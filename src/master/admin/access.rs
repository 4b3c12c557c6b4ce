//! Who may use the admin dashboard. The page itself holds no data: it is served to addresses
//! that may push (`udpsocket_group`) or scrape (`server.metrics_allow`). Its data and actions
//! need the key as well, as `Authorization: Bearer <key>` only (never in a URL, where logs and
//! browser history would keep it): the secret of the caller's `udpsocket_group` entry, or, from
//! an address that may only scrape, the secret of any entry. With `push.require_signature` on,
//! secrets must not cross a network in the clear: the key is then taken over TLS or on
//! loopback only.

use crate::master::http::Request;
use crate::secret::same_secret;

/// Why a dashboard request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminRefusal {
    /// Neither in `udpsocket_group` nor in `server.metrics_allow`.
    Address,
    /// No `Authorization: Bearer` header.
    NoKey,
    /// Not the secret.
    WrongKey,
    /// `push.require_signature` is on and the key would travel in the clear.
    InClear,
}

impl AdminRefusal {
    pub fn status(self) -> u16 {
        match self {
            AdminRefusal::Address | AdminRefusal::InClear => 403,
            AdminRefusal::NoKey | AdminRefusal::WrongKey => 401,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            AdminRefusal::Address => "the dashboard is not served to this address",
            AdminRefusal::NoKey => "the dashboard's key is missing (Authorization: Bearer <key>)",
            AdminRefusal::WrongKey => "wrong key",
            AdminRefusal::InClear => {
                "push.require_signature is on: the dashboard takes its key over TLS or on \
                 loopback only"
            }
        }
    }
}

/// What the request's origin says about its caller.
pub struct Caller<'a> {
    /// The secret of its `udpsocket_group` entry, if it has one.
    pub own_secret: Option<&'a str>,
    /// In `server.metrics_allow`.
    pub may_scrape: bool,
    pub loopback: bool,
}

/// How the server is set up.
pub struct Rules {
    pub tls: bool,
    pub require_signature: bool,
}

/// The page: to callers from an allowed address.
pub fn page(caller: &Caller) -> Result<(), AdminRefusal> {
    match caller.own_secret.is_some() || caller.may_scrape {
        true => Ok(()),
        false => Err(AdminRefusal::Address),
    }
}

/// Data and actions: an allowed address and the key. `is_any_secret` tells whether a key is
/// the secret of some `udpsocket_group` entry. Returns the key, which the actions use as the
/// push's secret.
pub fn data<'r>(
    caller: &Caller,
    rules: &Rules,
    req: &'r Request,
    is_any_secret: impl Fn(&str) -> bool,
) -> Result<&'r str, AdminRefusal> {
    page(caller)?;
    if rules.require_signature && !rules.tls && !caller.loopback {
        return Err(AdminRefusal::InClear);
    }
    let key = bearer(req).ok_or(AdminRefusal::NoKey)?;
    let right = match caller.own_secret {
        Some(secret) => same_secret(key, secret),
        None => is_any_secret(key),
    };
    match right {
        true => Ok(key),
        false => Err(AdminRefusal::WrongKey),
    }
}

/// The key of an `Authorization: Bearer` header (the scheme is case-insensitive).
fn bearer(req: &Request) -> Option<&str> {
    let (scheme, key) = req.header("authorization")?.trim().split_once(' ')?;
    let key = key.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !key.is_empty()).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(auth: Option<&str>, query: &str) -> Request {
        Request {
            method: "GET".into(),
            path: "/api/admin/history".into(),
            query: query.into(),
            headers: auth
                .map(|a| vec![("authorization".to_string(), a.to_string())])
                .unwrap_or_default(),
            body: Vec::new(),
            keep_alive: true,
        }
    }

    /// `data`, with the key owned (the request lives only inside).
    fn judge(
        caller: &Caller,
        rules: &Rules,
        auth: Option<&str>,
        query: &str,
        any: impl Fn(&str) -> bool,
    ) -> Result<String, AdminRefusal> {
        data(caller, rules, &request(auth, query), any).map(str::to_owned)
    }

    const PLAIN: Rules = Rules {
        tls: false,
        require_signature: false,
    };

    fn pusher(secret: &str) -> Caller<'_> {
        Caller {
            own_secret: Some(secret),
            may_scrape: false,
            loopback: false,
        }
    }

    #[test]
    fn a_pusher_needs_its_own_secret_as_a_bearer_key() {
        let any = |k: &str| k == "other";
        let c = pusher("s3cret");
        assert_eq!(
            judge(&c, &PLAIN, Some("Bearer s3cret"), "", any),
            Ok("s3cret".into())
        );
        assert_eq!(
            judge(&c, &PLAIN, Some("bearer  s3cret "), "", any),
            Ok("s3cret".into())
        );
        let wrong = judge(&c, &PLAIN, Some("Bearer other"), "", any);
        assert_eq!(wrong, Err(AdminRefusal::WrongKey), "another entry's secret");
        // Never from the URL, nor another scheme.
        let in_url = judge(&c, &PLAIN, None, "sk=s3cret", any);
        assert_eq!(in_url, Err(AdminRefusal::NoKey));
        let basic = judge(&c, &PLAIN, Some("Basic s3cret"), "", any);
        assert_eq!(basic, Err(AdminRefusal::NoKey));
        assert_eq!(page(&c), Ok(()));
    }

    #[test]
    fn a_scraper_needs_some_entrys_secret_and_strangers_get_nothing() {
        let any = |k: &str| k == "s3cret";
        let scraper = Caller {
            own_secret: None,
            may_scrape: true,
            loopback: true,
        };
        assert_eq!(page(&scraper), Ok(()));
        assert!(judge(&scraper, &PLAIN, Some("Bearer s3cret"), "", any).is_ok());
        let wrong = judge(&scraper, &PLAIN, Some("Bearer nope"), "", any);
        assert_eq!(wrong, Err(AdminRefusal::WrongKey));
        let stranger = Caller {
            own_secret: None,
            may_scrape: false,
            loopback: false,
        };
        assert_eq!(page(&stranger), Err(AdminRefusal::Address));
        let refused = judge(&stranger, &PLAIN, Some("Bearer s3cret"), "", any);
        assert_eq!(refused, Err(AdminRefusal::Address));
        assert_eq!(AdminRefusal::Address.status(), 403);
        assert_eq!(AdminRefusal::WrongKey.status(), 401);
    }

    #[test]
    fn with_signatures_required_the_key_never_travels_in_the_clear() {
        let strict = Rules {
            tls: false,
            require_signature: true,
        };
        let req = request(Some("Bearer s3cret"), "");
        let remote = pusher("s3cret");
        assert_eq!(
            data(&remote, &strict, &req, |_| false),
            Err(AdminRefusal::InClear)
        );
        let local = Caller {
            loopback: true,
            ..pusher("s3cret")
        };
        assert!(data(&local, &strict, &req, |_| false).is_ok());
        let over_tls = Rules {
            tls: true,
            require_signature: true,
        };
        assert!(data(&remote, &over_tls, &req, |_| false).is_ok());
    }
}
