//! `clarion serve`: the API, the sequence scheduler and the webhook dispatcher in one
//! process, or a part of them (`role`: `api` serves HTTP only, `worker` runs the background
//! work only; several such nodes share one PostgreSQL database).

use std::sync::Arc;

use anyhow::Context;
use clarion_delivery::ssrf::SsrfPolicy;
use clarion_delivery::{Clock, Dispatcher, DispatcherConfig, RetryPolicy, SystemClock};
use clarion_server::AppState;
use clarion_store::StoreError;
use clarion_store::retry::{Outage, error_chain};
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// The dispatcher settings from the `[webhooks]` section.
pub fn dispatcher_config(config: &Config) -> DispatcherConfig {
    let webhooks = &config.webhooks;
    DispatcherConfig {
        retry: RetryPolicy {
            schedule: webhooks.retry_schedule.iter().map(|d| d.0).collect(),
            retry_after_max: webhooks.retry_after_max.0,
        },
        attempt_timeout: webhooks.attempt_timeout.0,
        lease_margin: webhooks.lease_margin.0,
        max_in_flight: webhooks.max_in_flight,
        max_in_flight_per_endpoint: webhooks.max_in_flight_per_endpoint,
        min_in_flight_per_endpoint: webhooks.min_in_flight_per_endpoint,
        max_in_flight_per_organization: webhooks.max_in_flight_per_organization,
        poll_interval: webhooks.poll_interval.0,
        ssrf: ssrf_policy(config),
        store_response_excerpt: webhooks.store_response_excerpt,
        disable_after: webhooks.disable_after.0,
    }
}

/// The scheduler settings.
pub fn scheduler_config(config: &Config) -> clarion_scheduler::SchedulerConfig {
    let compliance = &config.compliance;
    let caps = (compliance.max_contacts_per_day > 0 || compliance.max_contacts_per_week > 0)
        .then_some(clarion_scheduler::ContactCaps {
            per_day: compliance.max_contacts_per_day,
            per_week: compliance.max_contacts_per_week,
        });
    clarion_scheduler::SchedulerConfig {
        clinic_number: config.simulator.from_number.clone(),
        batch_size: 256,
        poll_interval: config.webhooks.poll_interval.0,
        contact_caps: caps,
        reconcile_after: config.channels.reconcile_after.0,
        time_scale: config.simulator.time_scale,
        vapi: None,
        twilio: None,
        llm: None,
        eligibility_ssrf: ssrf_policy(config),
        provider_report_timeout: config.vapi.end_of_call_timeout.0,
        provider_give_up_after: config.vapi.give_up_after.0,
        limits: clarion_scheduler::ProviderLimits {
            max_concurrent_calls: config.vapi.max_concurrent_calls,
            reserve_for_inbound: config.vapi.reserve_for_inbound,
            messages_per_second: config.twilio.messages_per_second,
        },
    }
}

/// The Vapi client, when calls go through Vapi (`[channels] call = "vapi"`).
pub fn vapi_client(
    config: &Config,
) -> anyhow::Result<Option<clarion_providers::vapi::client::VapiClient>> {
    if config.channels.call != crate::config::CallChannel::Vapi {
        return Ok(None);
    }
    let vapi = &config.vapi;
    let settings = clarion_providers::vapi::client::VapiSettings {
        base_url: vapi.base_url.clone(),
        api_key: vapi.api_key.clone().unwrap_or_default(),
        phone_number_id: vapi.phone_number_id.clone().unwrap_or_default(),
        timeout: vapi.request_timeout.0,
    };
    Ok(Some(
        clarion_providers::vapi::client::VapiClient::new(settings)
            .context("building the Vapi client")?,
    ))
}

/// The Twilio SMS channel, when texts go through Twilio (`[channels] sms = "twilio"`).
pub fn twilio_channel(config: &Config) -> anyhow::Result<Option<clarion_scheduler::TwilioChannel>> {
    use clarion_providers::twilio::{client, signature::AuthToken, wire::Sender};
    if config.channels.sms != crate::config::SmsChannel::Twilio {
        return Ok(None);
    }
    let twilio = &config.twilio;
    let sender = match (&twilio.messaging_service_sid, &twilio.from_number) {
        (Some(sid), _) => Sender::MessagingService(sid.clone()),
        (None, Some(number)) => Sender::From(number.clone()),
        (None, None) => anyhow::bail!("twilio needs messaging_service_sid or from_number"),
    };
    let settings = client::TwilioSettings {
        base_url: twilio.base_url.clone(),
        account_sid: twilio.account_sid.clone().unwrap_or_default(),
        auth_token: AuthToken::new(twilio.auth_token.clone().unwrap_or_default()),
        sender,
        timeout: twilio.request_timeout.0,
    };
    let senders = twilio
        .senders
        .iter()
        .filter_map(|(org, sender)| {
            let org = clarion_store::OrgId(org.parse().ok()?);
            let sender = if sender.starts_with("MG") {
                Sender::MessagingService(sender.clone())
            } else {
                Sender::From(sender.clone())
            };
            Some((org, sender))
        })
        .collect();
    Ok(Some(clarion_scheduler::TwilioChannel {
        client: client::TwilioClient::new(settings).context("building the Twilio client")?,
        public_base_url: twilio.public_base_url.clone().unwrap_or_default(),
        account_sid: twilio.account_sid.clone().unwrap_or_default(),
        senders,
    }))
}

/// The model behind LLM SMS assistants, when `llm.api_key` is set.
pub fn llm_client(config: &Config) -> anyhow::Result<Option<clarion_providers::llm::LlmClient>> {
    let Some(api_key) = config.llm.api_key.clone().filter(|k| !k.trim().is_empty()) else {
        return Ok(None);
    };
    let settings = clarion_providers::llm::LlmSettings {
        base_url: config.llm.base_url.clone(),
        api_key,
        model: config.llm.model.clone(),
        timeout: config.llm.timeout.0,
    };
    Ok(Some(
        clarion_providers::llm::LlmClient::new(settings).context("building the LLM client")?,
    ))
}

/// The secrets provider callbacks are checked against.
pub fn provider_secrets(config: &Config) -> clarion_server::ProviderSecrets {
    clarion_server::ProviderSecrets {
        vapi: (config.channels.call == crate::config::CallChannel::Vapi)
            .then(|| config.vapi.server_secret.clone())
            .flatten()
            .filter(|secret| !secret.trim().is_empty()),
        vapi_hmac: (config.channels.call == crate::config::CallChannel::Vapi)
            .then(|| config.vapi.hmac_secret.clone())
            .flatten()
            .filter(|secret| !secret.trim().is_empty())
            .map(|secret| clarion_server::VapiHmac {
                secret: clarion_providers::vapi::signature::HmacSecret::new(secret),
                signature_header: config
                    .vapi
                    .hmac_signature_header
                    .trim()
                    .to_ascii_lowercase(),
                timestamp_header: config
                    .vapi
                    .hmac_timestamp_header
                    .trim()
                    .to_ascii_lowercase(),
                window: config.vapi.hmac_window.0,
            }),
        twilio: (config.channels.sms == crate::config::SmsChannel::Twilio).then(|| {
            clarion_server::TwilioCallbacks {
                auth_token: clarion_providers::twilio::signature::AuthToken::new(
                    config.twilio.auth_token.clone().unwrap_or_default(),
                ),
                public_base_url: config.twilio.public_base_url.clone().unwrap_or_default(),
            }
        }),
    }
}

/// Who may read `/metrics`, and where.
pub fn operator_access(config: &Config) -> clarion_server::OperatorAccess {
    clarion_server::OperatorAccess {
        metrics_token: config.metrics_token.clone(),
        metrics_on_admin_listener: config.admin_listen.is_some(),
    }
}

/// The SSRF policy from the configuration.
pub fn ssrf_policy(config: &Config) -> SsrfPolicy {
    SsrfPolicy {
        allow_private: config.webhooks.allow_private_targets,
        allow_http: config.webhooks.allow_http,
        allowed_ports: config.webhooks.allowed_ports.clone(),
        ..SsrfPolicy::default()
    }
}

/// Runs until SIGINT or SIGTERM. Then the listener stops accepting, the dispatcher stops
/// claiming, in-flight attempts finish and are recorded, and the process exits.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let (store, resume_from) = open_store_at_start(&config).await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let dispatcher = Dispatcher::new(store.clone(), clock.clone(), dispatcher_config(&config))
        .context("starting the webhook dispatcher")?;
    let engine_clock: Arc<dyn Clock> = Arc::new(clarion_scheduler::ScaledClock::starting_at(
        resume_from,
        config.simulator.time_scale,
    ));
    let scheduler = clarion_scheduler::Scheduler::new(
        store.clone(),
        engine_clock,
        clock.clone(),
        dispatcher.outbox(),
        clarion_scheduler::SchedulerConfig {
            vapi: vapi_client(&config)?,
            twilio: twilio_channel(&config)?,
            llm: llm_client(&config)?,
            ..scheduler_config(&config)
        },
    );
    // An API node never runs its dispatcher: its endpoint stats show no concurrency limit
    // rather than the starting value of limits that never learn.
    let outbox = if config.role.runs_loops() {
        dispatcher.outbox()
    } else {
        dispatcher.outbox().without_dispatcher()
    };
    let state = AppState {
        store: store.clone(),
        outbox,
        scheduler: scheduler.clone(),
        clock,
        ssrf: ssrf_policy(&config),
        metrics: clarion_server::metrics_handle(),
        providers: provider_secrets(&config),
        action_limits: std::sync::Arc::default(),
        operator: operator_access(&config),
        ui: std::sync::Arc::new(clarion_server::ui::UiState::new(config.ui.settings())),
    };
    let role = config.role;
    // The listeners are bound before anything is printed: a line on standard output says
    // the node is ready for what it names.
    let listener = if role.serves_api() {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        Some(listener)
    } else {
        None
    };
    let admin = match config.admin_listen {
        Some(admin_address) => Some(
            tokio::net::TcpListener::bind(admin_address)
                .await
                .with_context(|| format!("binding admin_listen {admin_address}"))?,
        ),
        None => None,
    };
    match &listener {
        Some(listener) => {
            let address = listener.local_addr()?;
            tracing::info!(%address, role = ?role, "clarion serving");
            println!("listening on http://{address}");
        }
        // A worker has no API listener.
        None => {
            tracing::info!(role = ?role, "clarion running the scheduler and the dispatcher; no API listener");
            println!("worker running (no API listener)");
        }
    }
    let admin = match admin {
        Some(admin_listener) => {
            let admin_address = admin_listener.local_addr()?;
            tracing::info!(%admin_address, "operator listener serving /metrics");
            println!("operator listener on http://{admin_address}");
            Some((admin_listener, clarion_server::admin_router(state.clone())))
        }
        None => None,
    };

    let shutdown = CancellationToken::new();
    tokio::spawn(signal_shutdown(shutdown.clone()));
    let limits = config.server.limits();
    let server = serve_optional(
        listener.map(|listener| (listener, clarion_server::router(state))),
        limits,
        shutdown.clone(),
    );
    let admin_server = serve_optional(admin, limits, shutdown.clone());
    // The background work, unless this node only serves the API: then the workers do it
    // (an API node's commits reach them through the database, and wake them: see
    // `Store::wakeups`).
    let runs_loops = role.runs_loops();
    let dispatch = {
        let stop = shutdown.clone().cancelled_owned();
        async {
            if runs_loops {
                dispatcher.run(stop).await;
            }
        }
    };
    let schedule = {
        let stop = shutdown.clone().cancelled_owned();
        async {
            if runs_loops {
                scheduler.run(stop).await;
            }
        }
    };
    let (served, admin_served, (), ()) = tokio::join!(server, admin_server, dispatch, schedule);
    served.context("serving HTTP")?;
    admin_served.context("serving the operator listener")?;
    store.close().await;
    tracing::info!("clarion stopped");
    Ok(())
}

/// Serves `router` on `listener` until `shutdown`, when there is one (a worker has no API
/// listener; `admin_listen` is optional).
async fn serve_optional(
    listening: Option<(tokio::net::TcpListener, axum::Router)>,
    limits: clarion_server::ServerLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    match listening {
        Some((listener, router)) => clarion_server::serve(listener, router, limits, shutdown).await,
        None => Ok(()),
    }
}

/// Opens the store, and reads the latest engine time stored: a sped-up engine clock resumes
/// from it, so that nothing stored lies in its future after a restart.
///
/// A database that cannot be reached yet (refused, timed out, still starting: the node and
/// its database started together, or the database is failing over) is tried again with
/// backoff, logged once, for `database.start_timeout`; then the start fails, saying so. Any
/// other failure (a wrong password, a bad URL, a failed migration, a missing secret key) ends
/// the start at once: waiting would not mend it.
async fn open_store_at_start(config: &Config) -> anyhow::Result<(clarion_store::Store, i64)> {
    let start_timeout = config.database.start_timeout.0;
    let deadline = tokio::time::Instant::now() + start_timeout;
    let mut outage = Outage::new("start-up");
    loop {
        let opened = async {
            let store =
                clarion_store::Store::connect_with(&config.database_url, config.store_options())
                    .await?;
            let resume_from = store.latest_engine_time().await?.unwrap_or(0);
            Ok::<_, StoreError>((store, resume_from))
        }
        .await;
        let error = match opened {
            Ok(opened) => {
                outage.succeeded();
                return Ok(opened);
            }
            Err(error) if error.is_transient() => error,
            Err(error) => return Err(anyhow::Error::new(error).context("opening the database")),
        };
        let wait = outage
            .failed(&error)
            .unwrap_or(clarion_store::retry::MAX_DELAY);
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            // The chain names the failure (refused, timed out), never the URL.
            anyhow::bail!(
                "the database could not be reached within {} (database.start_timeout): {}",
                humantime::format_duration(start_timeout),
                error_chain(&error)
            );
        }
        tokio::time::sleep(wait.min(left)).await;
    }
}

async fn signal_shutdown(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutdown requested");
    shutdown.cancel();
}
