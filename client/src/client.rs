//! The typed client: one method per RPC a typical caller needs, taking and returning Rust types.

use std::time::Duration;

use tonic::{
    service::interceptor::InterceptedService,
    transport::{Channel, Endpoint},
};

use crate::proto::repository_index_response::ModelIndex;
use crate::proto::{
    ModelConfig, ModelConfigRequest, ModelMetadataRequest, ModelMetadataResponse, ModelReadyRequest,
    RepositoryIndexRequest, ServerLiveRequest, ServerMetadataRequest, ServerMetadataResponse,
    ServerReadyRequest,
};
use crate::{ClientError, Credentials, GrpcInferenceServiceClient, InferRequest, InferResult, TlsOptions};

/// The largest message sent or received, matching the server's limit so that large tensors fail on the
/// server's terms rather than on tonic's 4 MiB default.
pub(crate) const MAX_MESSAGE_SIZE: usize = 256 * 1024 * 1024;

/// How long to wait for the TCP and HTTP/2 handshake, so an unreachable host fails instead of hanging.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to a Triton-compatible server.
///
/// Cloning is cheap and clones share one HTTP/2 connection, so a single `Client` can be cloned into every
/// task that sends requests; requests from all clones are multiplexed.
///
/// ```no_run
/// use ferry_client::{Client, InferInput, InferRequest};
///
/// # async fn run() -> Result<(), ferry_client::ClientError> {
/// let client = Client::connect("127.0.0.1:8001").await?;
/// assert!(client.server_ready().await?);
///
/// let request = InferRequest::new("simple")
///     .with_input(InferInput::new("INPUT0", [1, 16]).with_data(&[1i32; 16]))
///     .with_input(InferInput::new("INPUT1", [1, 16]).with_data(&[2i32; 16]));
/// let result = client.infer(request).await?;
/// assert_eq!(result.output_as::<i32>("OUTPUT0")?, vec![3; 16]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) channel: Channel,
    stub: Stub,
    /// What every request carries, kept for the stubs of Ferry's own services ([`Client::drift`]).
    pub(crate) credentials: Credentials,
}

/// The generated stub a [`Client`] wraps: its connection, with the client's [`Credentials`] added to every
/// request.
pub type Stub = GrpcInferenceServiceClient<InterceptedService<Channel, Credentials>>;

impl Client {
    /// Connects to `endpoint`, given as `host:port` or as a URI such as `http://host:port`; an
    /// `https://` URI connects over TLS with [`TlsOptions::new`] (the system's CAs).
    pub async fn connect(endpoint: impl Into<String>) -> Result<Self, ClientError> {
        let channel = connect_channel(endpoint.into(), None, |endpoint| endpoint).await?;
        Ok(Self::from_channel(channel))
    }

    /// Connects to `endpoint` (`host:port` or `https://host:port`) over TLS, trusting the CAs of `tls`
    /// and presenting its client certificate, if any, to a server that requires one.
    pub async fn connect_with_tls(endpoint: impl Into<String>, tls: TlsOptions) -> Result<Self, ClientError> {
        let channel = connect_channel(endpoint.into(), Some(&tls), |endpoint| endpoint).await?;
        Ok(Self::from_channel(channel))
    }

    /// Wraps a channel the caller configured (TLS, lazy connection, load balancing), with the same message
    /// size limits as [`Client::connect`].
    pub fn from_channel(channel: Channel) -> Self {
        Self {
            stub: stub(channel.clone(), Credentials::none()),
            channel,
            credentials: Credentials::none(),
        }
    }

    /// The same connection sending `credentials` (an API key or token, see [`Credentials::bearer`]) with
    /// every request, for servers that authenticate callers.
    pub fn with_credentials(self, credentials: Credentials) -> Self {
        Self {
            stub: stub(self.channel.clone(), credentials.clone()),
            channel: self.channel,
            credentials,
        }
    }

    /// The generated stub on the same connection, with the same credentials, for RPCs this type does not
    /// wrap (statistics, repository load and unload, streaming inference).
    pub fn raw(&self) -> Stub {
        self.stub.clone()
    }

    /// The connection and credentials, for the stubs of Ferry's own services ([`crate::traffic`]).
    pub(crate) fn parts(&self) -> (Channel, Credentials) {
        (self.channel.clone(), self.credentials.clone())
    }

    /// Whether the server process is up and able to answer, as a liveness probe would ask.
    pub async fn server_live(&self) -> Result<bool, ClientError> {
        Ok(self
            .raw()
            .server_live(ServerLiveRequest {})
            .await?
            .into_inner()
            .live)
    }

    /// Whether the server is ready to serve inference, as a readiness probe would ask.
    pub async fn server_ready(&self) -> Result<bool, ClientError> {
        Ok(self
            .raw()
            .server_ready(ServerReadyRequest {})
            .await?
            .into_inner()
            .ready)
    }

    /// Whether a model (and version; `None` lets the server pick) can take requests now.
    pub async fn model_ready(&self, name: &str, version: Option<&str>) -> Result<bool, ClientError> {
        let request = ModelReadyRequest {
            name: name.to_owned(),
            version: version.unwrap_or_default().to_owned(),
        };
        Ok(self.raw().model_ready(request).await?.into_inner().ready)
    }

    /// The server's name, version and protocol extensions, to find out what it supports.
    pub async fn server_metadata(&self) -> Result<ServerMetadataResponse, ClientError> {
        Ok(self
            .raw()
            .server_metadata(ServerMetadataRequest {})
            .await?
            .into_inner())
    }

    /// A model's versions, platform and input and output signatures, to build requests without its config.
    pub async fn model_metadata(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<ModelMetadataResponse, ClientError> {
        let request = ModelMetadataRequest {
            name: name.to_owned(),
            version: version.unwrap_or_default().to_owned(),
        };
        Ok(self.raw().model_metadata(request).await?.into_inner())
    }

    /// A model's full configuration as the server applies it, defaults filled in; an empty config if the
    /// server sends none.
    pub async fn model_config(&self, name: &str, version: Option<&str>) -> Result<ModelConfig, ClientError> {
        let request = ModelConfigRequest {
            name: name.to_owned(),
            version: version.unwrap_or_default().to_owned(),
        };
        Ok(self
            .raw()
            .model_config(request)
            .await?
            .into_inner()
            .config
            .unwrap_or_default())
    }

    /// Every model version in every repository with its state (`READY`, `UNAVAILABLE`, ...) and the reason
    /// for it, including models that failed to load.
    pub async fn repository_index(&self) -> Result<Vec<ModelIndex>, ClientError> {
        let request = RepositoryIndexRequest::default();
        Ok(self.raw().repository_index(request).await?.into_inner().models)
    }

    /// Runs one inference.
    ///
    /// Inputs are checked against their shapes before anything is sent; a server-side failure (unknown
    /// model, wrong input shape, overload) comes back as [`ClientError::Status`] with the server's code.
    ///
    /// ```no_run
    /// use ferry_client::ndarray::Array2;
    /// use ferry_client::{Client, InferInput, InferRequest};
    ///
    /// # async fn run(client: Client) -> Result<(), ferry_client::ClientError> {
    /// let features = Array2::<f32>::zeros((4, 32));
    /// let request = InferRequest::new("mlp_classifier")
    ///     .with_version("2")
    ///     .with_id("batch-17")
    ///     .with_input(InferInput::from_array("features", &features))
    ///     .with_output("probabilities");
    /// let result = client.infer(request).await?;
    /// let probabilities = result.output_array::<f32>("probabilities")?;
    /// assert_eq!(probabilities.shape(), [4, 10]);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn infer(&self, request: InferRequest) -> Result<InferResult, ClientError> {
        let request = request.into_proto()?;
        Ok(self.raw().model_infer(request).await?.into_inner().into())
    }
}

fn stub(channel: Channel, credentials: Credentials) -> Stub {
    GrpcInferenceServiceClient::with_interceptor(channel, credentials)
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE)
}

/// Opens one HTTP/2 connection to `endpoint` (`host:port` or a URI), over TLS when `tls` is given or the
/// URI is `https`, letting `configure` tune the endpoint first; shared with the load generator so both
/// accept the same addresses and fail with the same errors.
pub(crate) async fn connect_channel(
    endpoint: String,
    tls: Option<&TlsOptions>,
    configure: impl FnOnce(Endpoint) -> Endpoint,
) -> Result<Channel, ClientError> {
    let uri = match (endpoint.contains("://"), tls) {
        (true, _) => endpoint.clone(),
        (false, None) => format!("http://{endpoint}"),
        (false, Some(_)) => format!("https://{endpoint}"),
    };
    let https = uri.starts_with("https://");
    if tls.is_some() && !https {
        return Err(ClientError::TlsNeedsHttps { endpoint });
    }
    let mut dialer = Endpoint::from_shared(uri.clone())
        .map_err(|source| ClientError::InvalidEndpoint { endpoint, source })?
        .connect_timeout(CONNECT_TIMEOUT);
    if https {
        let config = tls.cloned().unwrap_or_default().to_tonic();
        dialer = dialer
            .tls_config(config)
            .map_err(|source| ClientError::InvalidTls {
                endpoint: uri.clone(),
                source,
            })?;
    }
    configure(dialer)
        .connect()
        .await
        .map_err(|source| ClientError::Transport {
            endpoint: uri,
            source,
        })
}
