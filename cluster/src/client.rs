//! The REST client of `millrace submit|jobs|status|cancel|drain` and `cluster status`: the
//! coordinator's address from `--coordinator`, `$MILLRACE_COORDINATOR` or the local cluster's
//! state, the bearer token from `--secret-file` or `$MILLRACE_HOME/secret`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{de::DeserializeOwned, Serialize};
use shuffle::net::auth::Secret;

use crate::api::{ClusterInfo, ErrorBody, JobDetail, JobPage, JobSummary, SubmitRequest};
use crate::ClusterError;

/// A client of one coordinator (or worker) HTTP port.
pub struct Client {
    base: String,
    address: String,
    token: String,
    agent: ureq::Agent,
}

impl Client {
    /// A client of `address` (`host:port`) authenticating with `secret`.
    pub fn new(address: &str, secret: &Secret) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(30)))
            .http_status_as_error(false)
            .build()
            .into();
        let address = address.trim_start_matches("http://").trim_end_matches('/');
        Self {
            base: format!("http://{address}"),
            address: address.to_string(),
            token: crate::home::token(secret),
            agent,
        }
    }

    /// The coordinator named by the flag, else `$MILLRACE_COORDINATOR`, else the local
    /// cluster's; the secret from the flag's file, else `$MILLRACE_HOME/secret`.
    pub fn from_flags(
        coordinator: Option<String>,
        secret_file: Option<PathBuf>,
    ) -> Result<Self, ClusterError> {
        let address = match coordinator
            .or_else(|| std::env::var("MILLRACE_COORDINATOR").ok().filter(|a| !a.is_empty()))
        {
            Some(address) => address,
            None => crate::local::LocalCluster::load()?
                .map(|c| c.coordinator)
                .ok_or_else(|| {
                    ClusterError::Usage(
                        "no coordinator: start one with `millrace cluster up`, or pass --coordinator HOST:PORT"
                            .into(),
                    )
                })?,
        };
        let secret_file = match secret_file {
            Some(file) => file,
            None => crate::home::secret_file()?,
        };
        Ok(Self::new(
            &address,
            &crate::home::read_secret(&secret_file)?,
        ))
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    fn answer<T: DeserializeOwned>(
        &self,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<T, ClusterError> {
        let mut response = result.map_err(|e| ClusterError::Unreachable {
            address: self.address.clone(),
            reason: e.to_string(),
        })?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .map_err(|e| ClusterError::Unreachable {
                address: self.address.clone(),
                reason: e.to_string(),
            })?;
        if !(200..300).contains(&status) {
            let reason = serde_json::from_str::<ErrorBody>(&text)
                .map(|e| e.error)
                .unwrap_or_else(|_| text.trim().to_string());
            return Err(ClusterError::Refused { status, reason });
        }
        serde_json::from_str(&text).map_err(|e| ClusterError::Unreachable {
            address: self.address.clone(),
            reason: format!("an answer that is not what millrace sends: {e}"),
        })
    }

    /// GET `path`, decoded.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClusterError> {
        let request = self.agent.get(format!("{}{path}", self.base));
        self.answer(
            request
                .header("Authorization", format!("Bearer {}", self.token))
                .call(),
        )
    }

    /// POST `body` (JSON) to `path`, decoded.
    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClusterError> {
        let request = (self.agent.post(format!("{}{path}", self.base)))
            .header("Authorization", format!("Bearer {}", self.token));
        self.answer(match body {
            Some(body) => request.send_json(body),
            None => request.send_empty(),
        })
    }

    pub fn submit(&self, request: &SubmitRequest) -> Result<JobSummary, ClusterError> {
        self.post("/v1/jobs", Some(request))
    }

    pub fn jobs(&self, page: u64, per_page: u64) -> Result<JobPage, ClusterError> {
        self.get(&format!("/v1/jobs?page={page}&per_page={per_page}"))
    }

    pub fn job(&self, id: u64) -> Result<JobDetail, ClusterError> {
        self.get(&format!("/v1/jobs/{id}"))
    }

    pub fn cancel(&self, id: u64) -> Result<JobSummary, ClusterError> {
        self.post::<(), _>(&format!("/v1/jobs/{id}/cancel"), None)
    }

    pub fn cluster(&self) -> Result<ClusterInfo, ClusterError> {
        self.get("/v1/cluster")
    }
}
