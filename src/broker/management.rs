//! A small client of RabbitMQ's management HTTP API (reqwest underneath).

use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;

use super::nodes::{Nodes, node_down};
use super::{BrokerError, DEFAULT_TIMEOUT};
use crate::inventory::{BrokerConfig, Secret};

/// Characters left as they are in a path segment; everything else (`/` included) is encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes one path segment (a vhost `/` becomes `%2F`).
pub fn segment(value: &str) -> String {
    utf8_percent_encode(value, SEGMENT).to_string()
}

/// The path segment of a queue or exchange name, or an error for `.` and `..`, which the
/// management API reads as path steps however they are encoded (`/queues/ops/.` lists every
/// queue of the vhost): such a queue can only be reached over AMQP.
fn named(broker: &str, name: &str) -> Result<String, BrokerError> {
    if name == "." || name == ".." {
        return Err(BrokerError::Unaddressable {
            broker: broker.to_string(),
            name: name.to_string(),
        });
    }
    Ok(segment(name))
}

/// The HTTP client of a management URL: one per process for each kind (TLS or not) and
/// timeout, since building one is costly (a TLS client reads every certificate of the
/// system's store). A plain `http://` client is built without TLS roots and follows no
/// redirect to `https://`: the inventory names the URL to use.
fn client(tls: bool, timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    type Built = Vec<((bool, Duration), reqwest::Client)>;
    static BUILT: std::sync::Mutex<Built> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, client)) = built.iter().find(|(key, _)| *key == (tls, timeout)) {
        return Ok(client.clone());
    }
    let mut builder = reqwest::Client::builder()
        .connect_timeout(timeout)
        .timeout(timeout);
    if !tls {
        builder =
            builder
                .tls_certs_only(std::iter::empty())
                .redirect(reqwest::redirect::Policy::custom(|attempt| {
                    if attempt.url().scheme() != "http" {
                        let to = attempt.url().to_string();
                        attempt.error(format!(
                            "the management API redirects to {to}: give that URL in the inventory"
                        ))
                    } else if attempt.previous().len() >= 10 {
                        attempt.error("too many redirects")
                    } else {
                        attempt.follow()
                    }
                }));
    }
    let client = builder.build()?;
    built.push(((tls, timeout), client.clone()));
    Ok(client)
}

/// A management API client for one broker and vhost. A cluster's nodes (the inventory's
/// URLs) are tried in order, see [`super::nodes`]: a node that cannot be reached is left for
/// the next, each try with the per-call timeout (a listing: within its one deadline).
#[derive(Clone)]
pub struct Management {
    http: reqwest::Client,
    nodes: Nodes,
    user: String,
    password: Secret,
    vhost: String,
    /// How the broker is named in messages (no secret in it).
    name: String,
    timeout: Duration,
    /// The deadline of a whole listing of queues or bindings.
    listing_timeout: Duration,
}

impl std::fmt::Debug for Management {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Management")
            .field("nodes", &self.nodes.urls())
            .field("user", &self.user)
            .field("vhost", &self.vhost)
            .finish()
    }
}

/// What `GET /api/overview` tells about the broker.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Overview {
    #[serde(default)]
    pub rabbitmq_version: String,
    #[serde(default)]
    pub cluster_name: String,
}

impl Management {
    /// A client for the broker of a group, with its password already read.
    pub fn new(config: &BrokerConfig, password: Secret) -> Result<Management, BrokerError> {
        Self::with_timeout(config, password, DEFAULT_TIMEOUT)
    }

    /// Like [`Management::new`] with another timeout per call.
    pub fn with_timeout(
        config: &BrokerConfig,
        password: Secret,
        timeout: Duration,
    ) -> Result<Management, BrokerError> {
        let name = config.display();
        let urls = &config.management_urls;
        let bad = |url: &str, detail: String| BrokerError::BadUrl {
            broker: name.clone(),
            url: url.to_string(),
            detail,
        };
        if urls.is_empty() {
            return Err(bad("", "no management URL".into()));
        }
        if let Some(url) = urls
            .iter()
            .find(|u| !(u.starts_with("http://") || u.starts_with("https://")))
        {
            let detail = "the management URL must start with http:// or https://";
            return Err(bad(url, detail.into()));
        }
        let tls = urls.iter().any(|u| u.starts_with("https://"));
        let http = client(tls, timeout).map_err(|err| bad(&urls[0], err.to_string()))?;
        Ok(Management {
            http,
            nodes: Nodes::of(urls),
            user: config.user.clone(),
            password,
            vhost: config.vhost.clone(),
            name,
            timeout,
            listing_timeout: config.listing_timeout,
        })
    }

    /// The vhost this client works in.
    pub fn vhost(&self) -> &str {
        &self.vhost
    }

    /// The management URL in use: the node that answered last.
    pub fn url(&self) -> &str {
        self.nodes.current()
    }

    /// The base of node `index`'s URLs (without a trailing `/`).
    fn base(&self, index: usize) -> &str {
        self.nodes.urls()[index].trim_end_matches('/')
    }

    /// Runs `attempt` on the node in use, and on the next ones while a node cannot be
    /// reached (see [`super::nodes`]); the first answer (a refusal too) is the result.
    async fn on_nodes<T, Fut>(
        &self,
        mut attempt: impl FnMut(usize) -> Fut,
    ) -> Result<T, BrokerError>
    where
        Fut: std::future::Future<Output = Result<T, BrokerError>>,
    {
        let mut failed = Vec::new();
        for index in self.nodes.order() {
            match attempt(index).await {
                Err(err) if node_down(&err) => failed.push((index, err)),
                answer => {
                    self.nodes.answered(index, &failed);
                    return answer;
                }
            }
        }
        Err(self.nodes.none_answered(failed))
    }

    /// Sends a request to a path under `/api`; returns the body of a 2xx answer, and a typed
    /// error for anything else. `what` names the request in errors. Every request roll makes
    /// is safe to send again, to another node too.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
        what: &str,
    ) -> Result<String, BrokerError> {
        self.on_nodes(|index| self.send_to(index, method.clone(), path, query, body, what))
            .await
    }

    /// [`Management::send`] to node `index`, within the per-call timeout.
    async fn send_to(
        &self,
        index: usize,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
        what: &str,
    ) -> Result<String, BrokerError> {
        let base = self.base(index);
        let url = format!("{base}/api/{path}");
        let mut request = self
            .http
            .request(method, &url)
            .basic_auth(&self.user, Some(self.password.expose()))
            .query(query);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = match tokio::time::timeout(self.timeout, request.send()).await {
            Err(_) => return Err(self.timeout_error(what)),
            Ok(Err(err)) if err.is_timeout() => return Err(self.timeout_error(what)),
            Ok(Err(err)) => return Err(self.unreachable(base, &err)),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        let body = match tokio::time::timeout(self.timeout, response.text()).await {
            Err(_) => return Err(self.timeout_error(what)),
            Ok(Err(err)) => return Err(self.unreachable(base, &err)),
            Ok(Ok(body)) => body,
        };
        if status.is_success() {
            Ok(body)
        } else {
            Err(self.refusal(status, &body, what))
        }
    }

    /// The error of an answer that is not a 2xx.
    fn refusal(&self, status: StatusCode, body: &str, what: &str) -> BrokerError {
        if status == StatusCode::NOT_FOUND
            && let Some(node) = super::nodes::home_node_down(body)
        {
            return BrokerError::NodeDown {
                broker: self.name.clone(),
                what: what.to_string(),
                node,
                detail: short(body),
            };
        }
        match status {
            StatusCode::UNAUTHORIZED => BrokerError::Unauthorized {
                broker: self.name.clone(),
                user: self.user.clone(),
                detail: short(body),
            },
            s => BrokerError::Http {
                broker: self.name.clone(),
                what: what.to_string(),
                status: s.as_u16(),
                body: short(body),
            },
        }
    }

    /// A request to `base` that got no answer; a redirect refused (see [`client`]) is the
    /// URL's fault, not the node's.
    fn unreachable(&self, base: &str, err: &reqwest::Error) -> BrokerError {
        if err.is_redirect() {
            return BrokerError::BadUrl {
                broker: self.name.clone(),
                url: base.to_string(),
                detail: reqwest_detail(err),
            };
        }
        BrokerError::Unreachable {
            broker: self.name.clone(),
            url: base.to_string(),
            detail: reqwest_detail(err),
        }
    }

    /// GETs a listing (a JSON array of objects) under `/api` and decodes it element by
    /// element as its body arrives: `each` gets every element in the broker's order, and
    /// nothing but the element being read is held (see [`super::json_array`]).
    ///
    /// The whole call has `deadline`, not the per-call timeout: the broker answers a listing
    /// only once it has gathered every item, so its first byte comes later the larger the
    /// vhost. Once the answer streams, no chunk may take longer than the per-call timeout (a
    /// broker that stops sending is noticed in that time, not at the listing's deadline).
    async fn stream_list<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
        what: &str,
        deadline: Duration,
        mut each: impl FnMut(T),
    ) -> Result<u64, BrokerError> {
        let started = tokio::time::Instant::now();
        let until = started + deadline;
        let over = || BrokerError::Timeout {
            broker: self.name.clone(),
            what: what.to_string(),
            after: deadline,
        };
        // The answer's head from the first node that gives one, within the deadline; once
        // items are handed to `each`, the listing is not asked again of another node.
        let (base, mut response) = self
            .on_nodes(|index| async move {
                let base = self.base(index);
                let url = format!("{base}/api/{path}");
                let request = self
                    .http
                    .get(&url)
                    .basic_auth(&self.user, Some(self.password.expose()))
                    .query(query)
                    // Overrides the client's per-call timeout, for this request only.
                    .timeout(until.saturating_duration_since(tokio::time::Instant::now()));
                let response = match tokio::time::timeout_at(until, request.send()).await {
                    Err(_) => return Err(over()),
                    Ok(Err(err)) if err.is_timeout() => return Err(over()),
                    Ok(Err(err)) if cut_off(started.elapsed(), err.is_connect()) => {
                        return Err(BrokerError::CutOff {
                            broker: self.name.clone(),
                            what: what.to_string(),
                            after: started.elapsed(),
                        });
                    }
                    Ok(Err(err)) => return Err(self.unreachable(base, &err)),
                    Ok(Ok(response)) => response,
                };
                let status = response.status();
                if !status.is_success() {
                    let body = match tokio::time::timeout_at(until, response.text()).await {
                        Err(_) => return Err(over()),
                        Ok(Err(err)) => return Err(self.unreachable(base, &err)),
                        Ok(Ok(body)) => body,
                    };
                    return Err(self.refusal(status, &body, what));
                }
                Ok((base, response))
            })
            .await?;
        let mut array = super::json_array::JsonArray::new();
        let mut first_byte = None;
        let decode = |err: super::json_array::JsonArrayError| BrokerError::Decode {
            broker: self.name.clone(),
            what: what.to_string(),
            detail: err.to_string(),
        };
        loop {
            let stall = (tokio::time::Instant::now() + self.timeout).min(until);
            let chunk = match tokio::time::timeout_at(stall, response.chunk()).await {
                Err(_) if stall == until => return Err(over()),
                Err(_) => {
                    return Err(BrokerError::Timeout {
                        broker: self.name.clone(),
                        what: format!("the rest of the {what}"),
                        after: self.timeout,
                    });
                }
                Ok(Err(err)) if err.is_timeout() => return Err(over()),
                Ok(Err(err)) => return Err(self.unreachable(base, &err)),
                Ok(Ok(None)) => break,
                Ok(Ok(Some(chunk))) => chunk,
            };
            if array.count() == 0 && first_byte.is_none() {
                first_byte = Some(started.elapsed());
            }
            array.feed(&chunk, &mut each).map_err(decode)?;
        }
        tracing::debug!(
            what,
            items = array.count(),
            first_byte_ms = first_byte.map_or(0, |d| d.as_millis()),
            total_ms = started.elapsed().as_millis(),
            "listing read"
        );
        array.finish().map_err(decode)
    }

    /// PUTs a JSON body to a path under `/api` (administration: vhosts, permissions).
    pub async fn put(
        &self,
        path: &str,
        body: &serde_json::Value,
        what: &str,
    ) -> Result<(), BrokerError> {
        self.send(reqwest::Method::PUT, path, &[], Some(body), what)
            .await
            .map(|_| ())
    }

    /// DELETEs a path under `/api`.
    pub async fn delete(&self, path: &str, what: &str) -> Result<(), BrokerError> {
        self.send(reqwest::Method::DELETE, path, &[], None, what)
            .await
            .map(|_| ())
    }

    /// DELETEs a path under `/api`; a 404 (already gone) is success.
    async fn delete_if_present(
        &self,
        path: &str,
        query: &[(&str, String)],
        what: &str,
    ) -> Result<(), BrokerError> {
        match self
            .send(reqwest::Method::DELETE, path, query, None, what)
            .await
        {
            Ok(_) | Err(BrokerError::Http { status: 404, .. }) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// GETs a path under `/api` and decodes the JSON answer. `what` names the request in errors.
    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
        what: &str,
    ) -> Result<T, BrokerError> {
        let body = self
            .send(reqwest::Method::GET, path, query, None, what)
            .await?;
        serde_json::from_str(&body).map_err(|err| BrokerError::Decode {
            broker: self.name.clone(),
            what: what.to_string(),
            detail: err.to_string(),
        })
    }

    /// Declares a queue with these settings (`PUT /api/queues/{vhost}/{name}`). Like an AMQP
    /// declare: a no-op when it exists with equivalent settings, refused (400) when not.
    pub async fn declare_queue(
        &self,
        name: &str,
        settings: &crate::broker::equivalence::QueueSettings,
    ) -> Result<(), BrokerError> {
        self.declare_queue_on(name, settings, None).await
    }

    /// [`declare_queue`](Self::declare_queue) on a cluster node: a classic queue lives there,
    /// a quorum queue has its leader there (with `None`, the node that answers the call).
    pub async fn declare_queue_on(
        &self,
        name: &str,
        settings: &crate::broker::equivalence::QueueSettings,
        node: Option<&str>,
    ) -> Result<(), BrokerError> {
        let path = format!(
            "queues/{}/{}",
            segment(&self.vhost),
            named(&self.name, name)?
        );
        let mut body = serde_json::json!({
            "durable": settings.durable,
            "auto_delete": settings.auto_delete,
            "arguments": settings.arguments,
        });
        if let Some(node) = node {
            body["node"] = serde_json::Value::from(node);
        }
        self.send(
            reqwest::Method::PUT,
            &path,
            &[],
            Some(&body),
            &format!("declare of queue {name}"),
        )
        .await
        .map(|_| ())
    }

    /// Deletes a queue. With `if_empty`, the broker refuses while it holds messages.
    /// Deleting a queue that does not exist is not an error (the step can run again).
    pub async fn delete_queue(&self, name: &str, if_empty: bool) -> Result<(), BrokerError> {
        let path = format!(
            "queues/{}/{}",
            segment(&self.vhost),
            named(&self.name, name)?
        );
        let query: Vec<(&str, String)> = if if_empty {
            vec![("if-empty", "true".into())]
        } else {
            vec![]
        };
        self.delete_if_present(&path, &query, &format!("delete of queue {name}"))
            .await
    }

    /// Declares an exchange (`PUT /api/exchanges/{vhost}/{name}`): a no-op when it exists
    /// with the same settings.
    pub async fn declare_exchange(
        &self,
        name: &str,
        kind: &str,
        arguments: &std::collections::BTreeMap<String, serde_json::Value>,
    ) -> Result<(), BrokerError> {
        let path = format!(
            "exchanges/{}/{}",
            segment(&self.vhost),
            named(&self.name, name)?
        );
        let body = serde_json::json!({
            "type": kind,
            "durable": true,
            "auto_delete": false,
            "internal": false,
            "arguments": arguments,
        });
        self.send(
            reqwest::Method::PUT,
            &path,
            &[],
            Some(&body),
            &format!("declare of exchange {name}"),
        )
        .await
        .map(|_| ())
    }

    /// Deletes an exchange (and with it every binding to and from it); absent is fine.
    pub async fn delete_exchange(&self, name: &str) -> Result<(), BrokerError> {
        let path = format!(
            "exchanges/{}/{}",
            segment(&self.vhost),
            named(&self.name, name)?
        );
        self.delete_if_present(&path, &[], &format!("delete of exchange {name}"))
            .await
    }

    /// True when the exchange exists.
    pub async fn exchange_exists(&self, name: &str) -> Result<bool, BrokerError> {
        let path = format!(
            "exchanges/{}/{}",
            segment(&self.vhost),
            named(&self.name, name)?
        );
        match self
            .get::<serde_json::Value>(
                &path,
                &[("columns", "name".into())],
                &format!("exchange {name}"),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(BrokerError::Http { status: 404, .. }) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Adds a binding whose destination is a queue or an exchange (`destination_type`).
    /// Binding twice is a no-op.
    pub async fn bind(&self, binding: &BindingInfo) -> Result<(), BrokerError> {
        let path = format!(
            "bindings/{}/e/{}/{}/{}",
            segment(&self.vhost),
            named(&self.name, &binding.source)?,
            kind_segment(&binding.destination_type),
            named(&self.name, &binding.destination)?
        );
        let body = serde_json::json!({
            "routing_key": binding.routing_key,
            "arguments": binding.arguments,
        });
        self.send(
            reqwest::Method::POST,
            &path,
            &[],
            Some(&body),
            &format!(
                "binding of {} to {} ({})",
                binding.destination, binding.source, binding.routing_key
            ),
        )
        .await
        .map(|_| ())
    }

    /// Removes a binding (same source, destination, key and arguments); absent is fine.
    pub async fn unbind(&self, binding: &BindingInfo) -> Result<(), BrokerError> {
        let base = format!(
            "bindings/{}/e/{}/{}/{}",
            segment(&self.vhost),
            named(&self.name, &binding.source)?,
            kind_segment(&binding.destination_type),
            named(&self.name, &binding.destination)?
        );
        let what = format!(
            "unbinding of {} from {} ({})",
            binding.destination, binding.source, binding.routing_key
        );
        let listed: Vec<PropertiesKey> = match self.get(&base, &[], &what).await {
            Ok(listed) => listed,
            Err(BrokerError::Http { status: 404, .. }) => return Ok(()),
            Err(err) => return Err(err),
        };
        for found in listed
            .iter()
            .filter(|b| b.routing_key == binding.routing_key && b.arguments == binding.arguments)
        {
            let path = format!("{base}/{}", segment(&found.properties_key));
            self.delete_if_present(&path, &[], &what).await?;
        }
        Ok(())
    }

    /// The bindings whose destination is this exchange.
    pub async fn bindings_to_exchange(&self, name: &str) -> Result<Vec<BindingInfo>, BrokerError> {
        let path = format!(
            "exchanges/{}/{}/bindings/destination",
            segment(&self.vhost),
            named(&self.name, name)?
        );
        match self
            .get(
                &path,
                &[("columns", BINDING_COLUMNS.into())],
                &format!("bindings to exchange {name}"),
            )
            .await
        {
            Ok(all) => Ok(all),
            Err(BrokerError::Http { status: 404, .. }) => Ok(vec![]),
            Err(err) => Err(err),
        }
    }

    /// The bindings of one queue (without the default exchange's).
    pub async fn bindings_of(&self, queue: &str) -> Result<Vec<BindingInfo>, BrokerError> {
        let path = format!(
            "queues/{}/{}/bindings",
            segment(&self.vhost),
            named(&self.name, queue)?
        );
        let all: Vec<BindingInfo> = self
            .get(
                &path,
                &[("columns", BINDING_COLUMNS.into())],
                &format!("bindings of {queue}"),
            )
            .await?;
        Ok(all.into_iter().filter(|b| !b.source.is_empty()).collect())
    }

    fn timeout_error(&self, what: &str) -> BrokerError {
        BrokerError::Timeout {
            broker: self.name.clone(),
            what: what.to_string(),
            after: self.timeout,
        }
    }

    /// The broker's version and cluster name; proves the API answers and our login works.
    pub async fn overview(&self) -> Result<Overview, BrokerError> {
        self.get(
            "overview",
            &[("columns", "rabbitmq_version,cluster_name".into())],
            "overview",
        )
        .await
    }

    /// How many queues the broker holds, in every vhost (`object_totals`: cheap for the
    /// broker, unlike any listing).
    pub async fn queue_total(&self) -> Result<u64, BrokerError> {
        #[derive(serde::Deserialize, Default)]
        struct Totals {
            #[serde(default)]
            queues: u64,
        }
        #[derive(serde::Deserialize)]
        struct Answer {
            #[serde(default)]
            object_totals: Totals,
        }
        let answer: Answer = self
            .get(
                "overview",
                &[("columns", "object_totals".into())],
                "overview",
            )
            .await?;
        Ok(answer.object_totals.queues)
    }

    /// Proves the vhost exists and our user may use it (`GET /api/permissions/{vhost}/{user}`
    /// needs administrator rights, so this reads the vhost itself).
    pub async fn check_vhost(&self) -> Result<(), BrokerError> {
        let path = format!("vhosts/{}", segment(&self.vhost));
        match self
            .get::<serde_json::Value>(&path, &[("columns", "name".into())], "vhost lookup")
            .await
        {
            Ok(_) => Ok(()),
            Err(BrokerError::Http { status: 404, .. }) => Err(BrokerError::NoVhost {
                broker: self.name.clone(),
                vhost: self.vhost.clone(),
                user: self.user.clone(),
            }),
            Err(err) => Err(err),
        }
    }
}

/// The columns `roll` reads of a queue.
const QUEUE_COLUMNS: &str = "name,type,node,leader,durable,auto_delete,exclusive,arguments,messages,messages_persistent,consumers";
/// The columns of a queue listing: what a queue's equivalence and message count need. The
/// listing is asked without the broker's message statistics (see
/// [`Management::stream_queues`]), which leaves `messages_persistent` and `consumers` out.
/// Also where each queue lives (a classic queue's `node`, a quorum queue's `leader`,
/// `members` and `online`) and its user `policy`, which RabbitMQ 3.10 gives without
/// statistics too (not `effective_policy_definition` nor `operator_policy`).
const LISTING_COLUMNS: &str = "name,type,durable,auto_delete,exclusive,arguments,messages,\
                               node,leader,members,online,policy,state";
/// The columns of a queue listing with statistics, for the persistent messages.
const STATISTICS_COLUMNS: &str = "name,type,messages,messages_persistent";
/// The columns `roll` reads of a binding.
const BINDING_COLUMNS: &str = "source,destination,destination_type,routing_key,arguments";

/// A queue as the management API lists it (only the columns `roll` asks for).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct QueueInfo {
    pub name: String,
    #[serde(default)]
    pub durable: bool,
    #[serde(default)]
    pub auto_delete: bool,
    /// RabbitMQ 3.10 lists a quorum queue's as `null` (it has no exclusive owner).
    #[serde(default, deserialize_with = "null_is_false")]
    pub exclusive: bool,
    #[serde(default)]
    pub arguments: std::collections::BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub messages: Option<u64>,
    #[serde(default)]
    pub messages_persistent: Option<u64>,
    #[serde(default)]
    pub consumers: Option<u64>,
    /// `classic`, `quorum` or `stream` (absent before RabbitMQ 3.8: classic).
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// A classic queue's node.
    #[serde(default)]
    pub node: Option<String>,
    /// A quorum queue's (or stream's) leader.
    #[serde(default)]
    pub leader: Option<String>,
    /// A quorum queue's (or stream's) members, and those of them online.
    #[serde(default)]
    pub members: Option<Vec<String>>,
    #[serde(default)]
    pub online: Option<Vec<String>>,
    /// The user policy that applies to it.
    #[serde(default)]
    pub policy: Option<String>,
    /// `running`, `down`, ... (a classic queue whose node is down is listed `down`).
    #[serde(default)]
    pub state: Option<String>,
    /// Rates of deliveries and gets (only in [`Management::queue_with_rates`]).
    #[serde(default)]
    pub message_stats: Option<MessageStats>,
}

/// A boolean that the broker may give as `null` (false).
fn null_is_false<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    Ok(<Option<bool> as serde::Deserialize>::deserialize(deserializer)?.unwrap_or(false))
}

/// A queue's message rates, as the broker last sampled them.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct MessageStats {
    #[serde(default)]
    pub deliver_get_details: Option<Rate>,
    /// `basic.get` on an empty queue: a client that polls (sr3) and finds nothing.
    #[serde(default)]
    pub get_empty_details: Option<Rate>,
}

/// One rate, per second.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct Rate {
    #[serde(default)]
    pub rate: f64,
}

impl QueueInfo {
    /// True when something takes from the queue: a consumer, or deliveries and gets (an
    /// empty get too: a client that polls, as sr3 does, has no consumer).
    pub fn consumed(&self) -> bool {
        let rate = |r: &Option<Rate>| r.as_ref().map_or(0.0, |r| r.rate);
        self.consumers.unwrap_or(0) > 0
            || self.message_stats.as_ref().is_some_and(|s| {
                rate(&s.deliver_get_details) > 0.0 || rate(&s.get_empty_details) > 0.0
            })
    }

    /// Messages a broker restart would lose: those not persistent, in a classic queue
    /// (quorum queues keep every message). `None` when the answer did not say: a classic
    /// queue holding messages, listed without `messages_persistent`.
    pub fn transient(&self) -> Option<u64> {
        if self.kind.as_deref().is_some_and(|k| k != "classic") {
            return Some(0);
        }
        match (self.messages, self.messages_persistent) {
            (None | Some(0), _) => Some(0),
            (Some(all), Some(persistent)) => Some(all.saturating_sub(persistent)),
            (Some(_), None) => None,
        }
    }

    /// True for a quorum queue (by its type, or its declared `x-queue-type`).
    pub fn is_quorum(&self) -> bool {
        self.kind.as_deref() == Some("quorum")
            || self
                .arguments
                .get("x-queue-type")
                .and_then(serde_json::Value::as_str)
                == Some("quorum")
    }
}

/// A binding as the management API lists it.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
pub struct BindingInfo {
    pub source: String,
    pub destination: String,
    pub destination_type: String,
    pub routing_key: String,
    #[serde(default)]
    pub arguments: std::collections::BTreeMap<String, serde_json::Value>,
}

/// A binding's key in the management API (to delete it).
#[derive(Debug, Clone, serde::Deserialize)]
struct PropertiesKey {
    routing_key: String,
    #[serde(default)]
    arguments: std::collections::BTreeMap<String, serde_json::Value>,
    properties_key: String,
}

/// The path segment of a binding's destination kind.
fn kind_segment(destination_type: &str) -> &'static str {
    if destination_type == "exchange" {
        "e"
    } else {
        "q"
    }
}

/// A client connection as the management API lists it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ConnectionInfo {
    #[serde(default)]
    pub vhost: String,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub peer_host: String,
    #[serde(default)]
    pub peer_port: u16,
    #[serde(default)]
    pub client_properties: serde_json::Map<String, serde_json::Value>,
}

impl ConnectionInfo {
    /// `client_properties.product` and `product_version`, when the client sent them.
    pub fn product(&self) -> (String, String) {
        let get = |key: &str| {
            self.client_properties
                .get(key)
                .and_then(serde_json::Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        (get("product"), get("product_version"))
    }
}

impl Management {
    /// Lists the vhost's queues in one request, as [`Management::stream_queues`] gives them.
    pub async fn list_queues(&self) -> Result<Vec<QueueInfo>, BrokerError> {
        let mut all = Vec::new();
        self.stream_queues(|q| all.push(q)).await?;
        Ok(all)
    }

    /// The vhost's queues, one by one as the answer arrives (see [`Management::stream_list`]):
    /// `each` gets every queue, and no queue is held here once it has been given. Returns
    /// how many there were. The call has the broker's `listing_timeout` (inventory).
    ///
    /// One unpaged request, with only the columns `roll` reads, rather than pages: for every
    /// page the broker gathers (and sorts) the whole vhost's queues before it slices out 500
    /// (at most), so a paged listing of 20,000 queues costs it 40 full listings
    /// (BENCHMARKS.md), and pages would still have to be requested one after the other to
    /// keep memory flat. Paging's one advantage, an answer of bounded size, is what reading
    /// the unpaged answer as it streams gives too. With the columns cut down, the answer is a
    /// few hundred bytes per queue.
    ///
    /// Without the broker's message statistics (`disable_stats=true`), which the management
    /// plugin otherwise gathers and merges into every queue of the listing: on RabbitMQ 3.10
    /// that costs it about three times the listing itself (BENCHMARKS.md). The message
    /// counts come instead from each queue itself (`enable_queue_totals=true`: `messages`,
    /// `messages_ready`, `messages_unacknowledged`); `messages_persistent` and `consumers`
    /// are not given (see [`Management::stream_queue_statistics`]). In no order.
    pub async fn stream_queues(&self, each: impl FnMut(QueueInfo)) -> Result<u64, BrokerError> {
        let path = format!("queues/{}", segment(&self.vhost));
        self.stream_list(
            &path,
            &[
                ("disable_stats", "true".into()),
                ("enable_queue_totals", "true".into()),
                ("columns", LISTING_COLUMNS.into()),
                // Unsorted (RabbitMQ 3.9 and later): roll sorts the rows itself.
                ("sort", String::new()),
            ],
            "queue listing",
            self.listing_timeout,
            each,
        )
        .await
        .map_err(|err| self.vhost_error(err))
    }

    /// The vhost's queues with the broker's message statistics, only their names, types and
    /// message counts, persistent ones included: the listing's costly form, for when many
    /// queues need their persistent messages counted.
    pub async fn stream_queue_statistics(
        &self,
        each: impl FnMut(QueueInfo),
    ) -> Result<u64, BrokerError> {
        let path = format!("queues/{}", segment(&self.vhost));
        self.stream_list(
            &path,
            &[("columns", STATISTICS_COLUMNS.into())],
            "queue listing with statistics",
            self.listing_timeout,
            each,
        )
        .await
        .map_err(|err| self.vhost_error(err))
    }

    /// The names of the vhost's queues (`kind` "queues") or exchanges ("exchanges") that
    /// start with `prefix`.
    pub async fn names_with_prefix(
        &self,
        kind: &str,
        prefix: &str,
    ) -> Result<Vec<String>, BrokerError> {
        #[derive(serde::Deserialize)]
        struct Named {
            name: String,
        }
        let path = format!("{kind}/{}", segment(&self.vhost));
        let all: Vec<Named> = self
            .get(
                &path,
                &[("columns", "name".into())],
                &format!("{kind} listing"),
            )
            .await
            .map_err(|err| self.vhost_error(err))?;
        Ok(all
            .into_iter()
            .map(|n| n.name)
            .filter(|n| n.starts_with(prefix))
            .collect())
    }

    /// One queue, or `None` when it does not exist.
    pub async fn queue(&self, name: &str) -> Result<Option<QueueInfo>, BrokerError> {
        self.queue_columns(name, QUEUE_COLUMNS.into()).await
    }

    /// One queue with its message rates, or `None` when it does not exist.
    pub async fn queue_with_rates(&self, name: &str) -> Result<Option<QueueInfo>, BrokerError> {
        self.queue_columns(name, format!("{QUEUE_COLUMNS},message_stats"))
            .await
    }

    async fn queue_columns(
        &self,
        name: &str,
        columns: String,
    ) -> Result<Option<QueueInfo>, BrokerError> {
        let path = format!(
            "queues/{}/{}",
            segment(&self.vhost),
            named(&self.name, name)?
        );
        match self
            .get(&path, &[("columns", columns)], "queue lookup")
            .await
        {
            Ok(info) => Ok(Some(info)),
            Err(BrokerError::Http { status: 404, .. }) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Every binding of the vhost whose destination is a queue, without the implicit binding
    /// of every queue to the default exchange (which cannot be made or removed).
    pub async fn queue_bindings(&self) -> Result<Vec<BindingInfo>, BrokerError> {
        let mut all = Vec::new();
        self.stream_queue_bindings(|b| all.push(b)).await?;
        Ok(all)
    }

    /// Like [`Management::queue_bindings`], one by one as the answers arrive; returns how many
    /// bindings the broker listed, of every kind. The whole has the `listing_timeout`.
    ///
    /// Read exchange by exchange (the vhost's exchanges, then each one's bindings as a
    /// source), not with the vhost's binding listing: that one also makes and sends the
    /// implicit binding of every queue to the default exchange, as many as there are queues,
    /// which costs the broker about as much as the bindings that matter. When an exchange's
    /// name cannot be put in a path (`.` or `..`), the vhost's listing is read instead.
    /// Unsorted, as the queues (the broker's sort of a listing costs it a fifth of it).
    pub async fn stream_queue_bindings(
        &self,
        mut each: impl FnMut(BindingInfo),
    ) -> Result<u64, BrokerError> {
        #[derive(serde::Deserialize)]
        struct Named {
            name: String,
        }
        let until = tokio::time::Instant::now() + self.listing_timeout;
        let left = || until.saturating_duration_since(tokio::time::Instant::now());
        let mut exchanges = Vec::new();
        self.stream_list(
            &format!("exchanges/{}", segment(&self.vhost)),
            &[("disable_stats", "true".into()), ("columns", "name".into())],
            "exchange listing",
            left(),
            |x: Named| exchanges.push(x.name),
        )
        .await
        .map_err(|err| self.vhost_error(err))?;
        exchanges.retain(|x| !x.is_empty());
        let paths: Option<Vec<String>> = exchanges
            .iter()
            .map(|x| named(&self.name, x).ok())
            .collect();
        let mut keep = |b: BindingInfo| {
            if b.destination_type == "queue" && !b.source.is_empty() {
                each(b);
            }
        };
        let Some(paths) = paths else {
            return self
                .stream_list(
                    &format!("bindings/{}", segment(&self.vhost)),
                    &[("columns", BINDING_COLUMNS.into()), ("sort", String::new())],
                    "binding listing",
                    left(),
                    keep,
                )
                .await
                .map_err(|err| self.vhost_error(err));
        };
        let mut count = 0;
        for (exchange, path) in exchanges.iter().zip(paths) {
            let listed = self
                .stream_list(
                    &format!("exchanges/{}/{path}/bindings/source", segment(&self.vhost)),
                    &[("columns", BINDING_COLUMNS.into()), ("sort", String::new())],
                    &format!("binding listing of exchange {exchange}"),
                    left(),
                    &mut keep,
                )
                .await;
            match listed {
                Ok(n) => count += n,
                // Deleted since the exchanges were listed: it has no bindings.
                Err(BrokerError::Http { status: 404, .. }) => {}
                Err(err) => return Err(self.vhost_error(err)),
            }
        }
        Ok(count)
    }

    /// The client connections to this vhost that our user may see.
    pub async fn connections(&self) -> Result<Vec<ConnectionInfo>, BrokerError> {
        let all: Vec<ConnectionInfo> = self
            .get(
                "connections",
                &[(
                    "columns",
                    "vhost,user,peer_host,peer_port,client_properties".into(),
                )],
                "connection listing",
            )
            .await?;
        Ok(all.into_iter().filter(|c| c.vhost == self.vhost).collect())
    }

    /// True when the cluster node `node` (`rabbit@c1`) runs, as the node that answers sees it;
    /// false when it is down or unknown.
    pub async fn node_running(&self, node: &str) -> Result<bool, BrokerError> {
        #[derive(serde::Deserialize)]
        struct Node {
            #[serde(default)]
            running: bool,
        }
        let path = format!("nodes/{}", segment(node));
        match self
            .get::<Node>(&path, &[("columns", "running".into())], "node lookup")
            .await
        {
            Ok(found) => Ok(found.running),
            Err(BrokerError::Http { status: 404, .. }) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// A 404 on a vhost path means the vhost does not exist.
    fn vhost_error(&self, err: BrokerError) -> BrokerError {
        match err {
            BrokerError::Http { status: 404, .. } => BrokerError::NoVhost {
                broker: self.name.clone(),
                vhost: self.vhost.clone(),
                user: self.user.clone(),
            },
            other => other,
        }
    }
}

/// The management API's idle timeout unless the broker sets another
/// (`management.tcp.idle_timeout`): a request it has not answered by then is closed.
const MANAGEMENT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// True when a request whose connection broke `elapsed` after it was sent was most likely
/// closed by the management API's idle timeout: the connection was made, and it broke at
/// about that timeout or later.
fn cut_off(elapsed: Duration, connecting: bool) -> bool {
    !connecting && elapsed + Duration::from_secs(2) >= MANAGEMENT_IDLE_TIMEOUT
}

/// One line from a reqwest error and its sources, without the URL's query.
fn reqwest_detail(err: &reqwest::Error) -> String {
    let mut text = String::new();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(err);
    while let Some(inner) = source {
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    if text.is_empty() {
        err.to_string()
    } else {
        text
    }
}

/// The first line of a body, at most 200 characters.
fn short(body: &str) -> String {
    let line = body.lines().next().unwrap_or("").trim();
    line.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(segment("/"), "%2F");
        assert_eq!(segment("ops"), "ops");
        assert_eq!(segment("q_a.b c"), "q_a.b%20c");
    }

    #[test]
    fn transient_messages_are_unknown_only_when_a_classic_queue_holds_some_uncounted() {
        let info = |json: serde_json::Value| -> QueueInfo { serde_json::from_value(json).unwrap() };
        let counted = info(
            serde_json::json!({"name": "q", "type": "classic", "messages": 5,
                                              "messages_persistent": 2}),
        );
        assert_eq!(counted.transient(), Some(3));
        // A listing without statistics: no persistent count.
        let listed = info(serde_json::json!({"name": "q", "type": "classic", "messages": 5}));
        assert_eq!(listed.transient(), None);
        let empty = info(serde_json::json!({"name": "q", "type": "classic", "messages": 0}));
        assert_eq!(empty.transient(), Some(0));
        let quorum = info(serde_json::json!({"name": "q", "type": "quorum", "messages": 5}));
        assert_eq!(quorum.transient(), Some(0));
        let down = info(serde_json::json!({"name": "q"}));
        assert_eq!(down.transient(), Some(0));
    }

    /// RabbitMQ 3.10.8's queue listing (without statistics, with totals) as it gives a
    /// quorum queue: `exclusive` is `null`.
    #[test]
    fn a_quorum_queue_of_the_listing_decodes() {
        let listed: QueueInfo = serde_json::from_str(
            r#"{"arguments":{"x-expires":600000,"x-queue-type":"quorum"},"auto_delete":false,
                "durable":true,"exclusive":null,"leader":"roll-c2@vm",
                "members":["roll-c2@vm","roll-c3@vm","roll-c1@vm"],"messages":0,"name":"qq",
                "online":["roll-c2@vm","roll-c3@vm"],"policy":"pexp","state":"running",
                "type":"quorum"}"#,
        )
        .expect("decodes");
        assert!(!listed.exclusive && listed.is_quorum());
        assert_eq!(listed.leader.as_deref(), Some("roll-c2@vm"));
        assert_eq!(listed.online.as_ref().map(Vec::len), Some(2));
        assert_eq!(listed.policy.as_deref(), Some("pexp"));
    }

    #[test]
    fn a_request_closed_at_the_idle_timeout_is_told_apart() {
        assert!(cut_off(Duration::from_millis(60_170), false));
        assert!(cut_off(Duration::from_secs(58), false));
        assert!(!cut_off(Duration::from_secs(20), false));
        assert!(!cut_off(Duration::from_secs(61), true));
        let err = BrokerError::CutOff {
            broker: "b".into(),
            what: "queue listing".into(),
            after: Duration::from_secs(60),
        };
        assert!(
            err.to_string().contains("management.tcp.idle_timeout"),
            "{err}"
        );
        assert!(!err.is_transient());
    }

    #[test]
    fn dot_names_cannot_be_addressed() {
        assert!(matches!(
            named("b", "."),
            Err(BrokerError::Unaddressable { .. })
        ));
        assert!(named("b", "..").is_err());
        assert_eq!(named("b", "...").unwrap(), "...");
        assert_eq!(named("b", "q.a").unwrap(), "q.a");
    }

    /// A broker behind `url` answering every request with `answer` (a whole HTTP response).
    async fn fake_broker(answer: &'static str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let _ = socket.write_all(answer.as_bytes()).await;
            }
        });
        format!("http://127.0.0.1:{port}")
    }

    fn config(url: String) -> BrokerConfig {
        BrokerConfig {
            management_urls: vec![url],
            amqp_urls: vec!["amqp://127.0.0.1:1".into()],
            vhost: "ops".into(),
            user: "u".into(),
            password: crate::inventory::SecretRef::Env("ROLL_TEST_UNUSED".into()),
            reconnect_deadline: Duration::from_secs(1),
            listing_timeout: Duration::from_secs(5),
        }
    }

    /// A plain http:// client (built without TLS roots) talks to its broker, and a redirect
    /// to https:// is refused with the URL to give instead, never followed.
    #[tokio::test]
    async fn an_http_client_answers_and_refuses_a_redirect_to_https() {
        let body = r#"{"rabbitmq_version":"3.10.8","cluster_name":"c"}"#;
        let ok: &'static str = Box::leak(
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .into_boxed_str(),
        );
        let url = fake_broker(ok).await;
        let m = Management::new(&config(url), Secret::new("pw")).unwrap();
        assert_eq!(m.overview().await.unwrap().rabbitmq_version, "3.10.8");

        let url = fake_broker(
            "HTTP/1.1 301 Moved\r\nlocation: https://127.0.0.1:1/api/overview\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        )
        .await;
        let m = Management::new(&config(url), Secret::new("pw")).unwrap();
        let err = m.overview().await.unwrap_err().to_string();
        assert!(
            err.contains("redirects to https://127.0.0.1:1/api/overview"),
            "{err}"
        );
    }

    /// A whole HTTP answer of `status` with a JSON `body`.
    fn answer(status: &str, body: &str) -> &'static str {
        Box::leak(
            format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .into_boxed_str(),
        )
    }

    /// A broker answering every request with `answer`, and how many requests it got.
    async fn counting_broker(
        answer: &'static str,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = count.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let _ = socket.write_all(answer.as_bytes()).await;
            }
        });
        (format!("http://127.0.0.1:{port}"), count)
    }

    /// A URL where nothing listens (a port just given back).
    fn nobody() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        format!("http://127.0.0.1:{port}/")
    }

    /// A node that accepts connections and never answers.
    async fn silent() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        format!("http://127.0.0.1:{port}")
    }

    fn cluster(urls: Vec<String>) -> BrokerConfig {
        BrokerConfig {
            management_urls: urls,
            ..config(String::new())
        }
    }

    const OVERVIEW: &str = r#"{"rabbitmq_version":"3.10.8","cluster_name":"c"}"#;

    /// A node that refuses connections is left for the next one, which is then used by every
    /// later call (of this client and of a new one) without trying the first again.
    #[tokio::test]
    async fn a_node_that_refuses_connections_is_left_for_the_next_and_remembered() {
        use std::sync::atomic::Ordering;
        let (c2, asked) = counting_broker(answer("200 OK", OVERVIEW)).await;
        let (c3, never) = counting_broker(answer("200 OK", OVERVIEW)).await;
        let down = nobody();
        let config = cluster(vec![down.clone(), c2.clone(), c3]);
        let m = Management::new(&config, Secret::new("pw")).unwrap();
        assert_eq!(m.url(), down);
        assert_eq!(m.overview().await.unwrap().rabbitmq_version, "3.10.8");
        assert_eq!(m.url(), c2);
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        let again = Management::new(&config, Secret::new("pw")).unwrap();
        assert_eq!(again.url(), c2);
        again.overview().await.unwrap();
        m.overview().await.unwrap();
        assert_eq!(asked.load(Ordering::SeqCst), 3);
        assert_eq!(never.load(Ordering::SeqCst), 0);
    }

    /// An HTTP error is an answer: the node is up, and the error is the call's.
    #[tokio::test]
    async fn an_http_error_is_an_answer_and_does_not_move_to_the_next_node() {
        use std::sync::atomic::Ordering;
        let (c1, _) = counting_broker(answer("503 Service Unavailable", "{}")).await;
        let (c2, asked) = counting_broker(answer("200 OK", OVERVIEW)).await;
        let m = Management::new(&cluster(vec![c1.clone(), c2]), Secret::new("pw")).unwrap();
        let err = m.overview().await.unwrap_err();
        assert!(
            matches!(err, BrokerError::Http { status: 503, .. }),
            "{err}"
        );
        assert_eq!(m.url(), c1);
        assert_eq!(asked.load(Ordering::SeqCst), 0);
    }

    /// A node that does not answer within the per-call timeout is left for the next; the next
    /// has its own timeout.
    #[tokio::test]
    async fn a_node_that_does_not_answer_in_time_is_left_for_the_next() {
        let c1 = silent().await;
        let (c2, _) = counting_broker(answer("200 OK", OVERVIEW)).await;
        let config = cluster(vec![c1, c2.clone()]);
        let m = Management::with_timeout(&config, Secret::new("pw"), Duration::from_millis(300))
            .unwrap();
        let started = std::time::Instant::now();
        assert_eq!(m.overview().await.unwrap().cluster_name, "c");
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(m.url(), c2);
    }

    /// A listing goes to the next node too, within its one deadline.
    #[tokio::test]
    async fn a_listing_moves_to_the_next_node_before_it_streams() {
        let (c2, _) = counting_broker(answer("200 OK", r#"[{"name":"q1"},{"name":"q2"}]"#)).await;
        let m = Management::new(&cluster(vec![nobody(), c2.clone()]), Secret::new("pw")).unwrap();
        let names: Vec<String> = m
            .list_queues()
            .await
            .unwrap()
            .into_iter()
            .map(|q| q.name)
            .collect();
        assert_eq!(names, ["q1", "q2"]);
        assert_eq!(m.url(), c2);
    }

    /// When no node answers, the error is still typed (transient: the run waits for the
    /// broker) and names every node and what each did.
    #[tokio::test]
    async fn when_no_node_answers_the_error_names_each_node() {
        let (a, b) = (nobody(), nobody());
        let m = Management::new(&cluster(vec![a.clone(), b.clone()]), Secret::new("pw")).unwrap();
        let err = m.check_vhost().await.unwrap_err();
        assert!(err.is_transient(), "{err}");
        let text = err.to_string();
        assert!(text.contains("every one of its 2 nodes"), "{text}");
        assert!(text.contains(&a) && text.contains(&b), "{text}");
        assert!(!text.contains("pw"), "{text}");
    }

    /// A queue whose home node is down is neither there nor absent: a transient error naming
    /// the node, never the 404 that callers read as "gone".
    #[tokio::test]
    async fn a_queue_on_a_stopped_node_is_down_not_absent() {
        let body = r#"{"error":"not_found","reason":"home node 'roll-c1@vm' of durable queue 'q' in vhost 'ops' is down or inaccessible"}"#;
        let (url, _) = counting_broker(answer("404 Not Found", body)).await;
        let m = Management::new(&cluster(vec![url]), Secret::new("pw")).unwrap();
        let err = m.delete_queue("q", true).await.unwrap_err();
        match &err {
            BrokerError::NodeDown { node, .. } => assert_eq!(node, "roll-c1@vm"),
            other => panic!("{other:?}"),
        }
        assert!(err.is_transient());
        assert!(m.queue("q").await.is_err());
    }

    #[test]
    fn short_keeps_the_first_line() {
        assert_eq!(short("{\"error\":\"x\"}\nmore"), "{\"error\":\"x\"}");
        assert_eq!(short(&"x".repeat(500)).len(), 200);
    }
}
