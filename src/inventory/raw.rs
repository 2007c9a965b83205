//! The inventory file as written, before merging and checks: serde structures with spans.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use toml::Spanned;

use super::{Half, Role};
use crate::units::HumanDuration;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInventory {
    #[serde(default)]
    pub defaults: Option<RawDefaults>,
    #[serde(default)]
    pub groups: Option<Spanned<RawGroups>>,
}

/// `[defaults]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDefaults {
    pub ssh: Option<Spanned<RawSsh>>,
    pub broker: Option<Spanned<RawBroker>>,
}

/// `[groups]`: the groups with the spans of their names, in file order.
#[derive(Debug)]
pub(super) struct RawGroups(pub Vec<(Spanned<String>, Spanned<RawGroup>)>);

impl<'de> Deserialize<'de> for RawGroups {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct GroupsVisitor;

        impl<'de> Visitor<'de> for GroupsVisitor {
            type Value = RawGroups;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of groups")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawGroups, A::Error> {
                let mut groups = Vec::new();
                while let Some(entry) = map.next_entry::<Spanned<String>, Spanned<RawGroup>>()? {
                    groups.push(entry);
                }
                // The parser hands keys over sorted; the spans give the file order back.
                groups.sort_by_key(|(name, _)| name.span().start);
                Ok(RawGroups(groups))
            }
        }

        deserializer.deserialize_map(GroupsVisitor)
    }
}

/// `[groups.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGroup {
    pub requires: Option<Spanned<String>>,
    pub broker: Option<Spanned<RawBroker>>,
    pub ssh: Option<Spanned<RawSsh>>,
    pub hosts: Spanned<Vec<Spanned<RawHost>>>,
    #[serde(default)]
    pub vars: BTreeMap<String, VarValue>,
}

/// SSH settings of `[defaults.ssh]` and `[groups.NAME.ssh]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSsh {
    pub user: Option<Spanned<String>>,
    pub address: Option<Spanned<String>>,
    pub port: Option<Spanned<i64>>,
    pub identity_file: Option<Spanned<String>>,
    pub known_hosts_file: Option<Spanned<String>>,
    pub config_file: Option<Spanned<String>>,
    pub connect_timeout: Option<Spanned<HumanDuration>>,
    pub persist: Option<Spanned<HumanDuration>>,
    pub strict_host_key_checking: Option<bool>,
}

/// The SSH settings a host may override.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHostSsh {
    pub user: Option<Spanned<String>>,
    pub address: Option<Spanned<String>>,
    pub port: Option<Spanned<i64>>,
}

impl From<RawHostSsh> for RawSsh {
    fn from(host: RawHostSsh) -> Self {
        RawSsh {
            user: host.user,
            address: host.address,
            port: host.port,
            ..RawSsh::default()
        }
    }
}

/// Broker settings of `[defaults.broker]` and `[groups.NAME.broker]`.
///
/// There is no `password` field: the pre-check refuses that key anywhere in the file before
/// these structures are read.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBroker {
    pub management_url: Option<Spanned<RawUrls>>,
    pub amqp_url: Option<Spanned<RawUrls>>,
    pub vhost: Option<Spanned<String>>,
    pub user: Option<Spanned<String>>,
    pub password_file: Option<Spanned<String>>,
    pub password_env: Option<Spanned<String>>,
    pub reconnect_deadline: Option<Spanned<HumanDuration>>,
    pub listing_timeout: Option<Spanned<HumanDuration>>,
}

/// A broker URL as written: one string, or an array of them (the nodes of a cluster, tried
/// in order), each item with its own span.
#[derive(Debug)]
pub(super) enum RawUrls {
    One(String),
    Many(Vec<Spanned<String>>),
}

impl<'de> Deserialize<'de> for RawUrls {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct UrlsVisitor;

        impl<'de> Visitor<'de> for UrlsVisitor {
            type Value = RawUrls;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a URL, or an array of URLs (one per node of a cluster)")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawUrls, E> {
                Ok(RawUrls::One(v.to_string()))
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<RawUrls, A::Error> {
                let mut urls = Vec::new();
                while let Some(url) = seq.next_element::<Spanned<String>>()? {
                    urls.push(url);
                }
                Ok(RawUrls::Many(urls))
            }
        }

        deserializer.deserialize_any(UrlsVisitor)
    }
}

/// One entry of `hosts = [...]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHost {
    pub name: Spanned<String>,
    pub half: Half,
    pub role: Option<Role>,
    pub pair: Option<Spanned<String>>,
    pub ssh: Option<Spanned<RawHostSsh>>,
    #[serde(default)]
    pub vars: BTreeMap<String, VarValue>,
}

/// The value of a variable: a string, an integer or a boolean, kept as text.
#[derive(Debug, Clone)]
pub(super) struct VarValue(pub String);

impl<'de> Deserialize<'de> for VarValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct VarVisitor;

        impl Visitor<'_> for VarVisitor {
            type Value = VarValue;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, an integer or a boolean")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<VarValue, E> {
                Ok(VarValue(v.to_string()))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<VarValue, E> {
                Ok(VarValue(v.to_string()))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<VarValue, E> {
                Ok(VarValue(v.to_string()))
            }

            fn visit_bool<E: de::Error>(self, v: bool) -> Result<VarValue, E> {
                Ok(VarValue(v.to_string()))
            }
        }

        deserializer.deserialize_any(VarVisitor)
    }
}
