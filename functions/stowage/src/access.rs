//! `stowage user …` and `stowage token …`: managing users and access tokens from the
//! machine that holds the database's credentials, as its administrator. Passwords are read
//! from standard input, never from the command line (where `ps` would show them); a token is
//! printed once, when it is created.

use std::io::BufRead as _;
use std::time::Duration;

use clap::{Args, Subcommand};
use stowage_core::Error;
use stowage_service::security::{Caller, Security, TokenRequest, UserChange};

use crate::ConfigArgs;
use crate::serve::open_metadata;

#[derive(Debug, Subcommand)]
pub(crate) enum UserCommand {
    /// Create a user.
    Add {
        name: String,
        #[arg(long)]
        email: Option<String>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        /// Make the user an administrator.
        #[arg(long)]
        admin: bool,
        /// A group to join (repeatable; the group must exist).
        #[arg(long = "group")]
        groups: Vec<String>,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// List the users.
    List {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Disable a user: its password and tokens stop working (within seconds on every node).
    Disable {
        name: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Create an access token and print it (shown once).
    Create(TokenCreate),
    /// List tokens (never their secrets).
    List {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Revoke a token by its id.
    Revoke {
        id: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Check the audit trail's chain: exits non-zero naming the first entry that was edited,
    /// inserted or removed.
    Verify {
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Debug, Args)]
pub(crate) struct TokenCreate {
    /// Whose token.
    #[arg(long)]
    user: String,
    /// applied-permissions/user (default), applied-permissions/admin or
    /// applied-permissions/groups:<group>[,<group>…].
    #[arg(long)]
    scope: Option<String>,
    /// Seconds the token lives (default: `[security] token_default_expiry_secs`; 0: never
    /// expires, where no maximum is set).
    #[arg(long)]
    expires_in: Option<u64>,
    #[arg(long, default_value = "")]
    description: String,
    /// Also print a refresh token, which can replace this token once (`POST
    /// /access/api/v1/tokens` with `grant_type=refresh_token`).
    #[arg(long)]
    refreshable: bool,
    #[command(flatten)]
    config: ConfigArgs,
}

async fn security(config: &ConfigArgs) -> Result<Security, Error> {
    let config = config.load().await?;
    let metadata = open_metadata(&config).await?;
    Ok(Security::new(
        metadata,
        "cli",
        config.anonymous_read,
        config.service_settings().tokens,
    ))
}

fn read_password() -> Result<String, Error> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| Error::InvalidInput(format!("cannot read the password from stdin: {e}")))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

pub(crate) async fn user(command: UserCommand) -> Result<(), Error> {
    let admin = Caller::admin();
    match command {
        UserCommand::Add {
            name,
            email,
            password_stdin,
            admin: make_admin,
            groups,
            config,
        } => {
            let password = password_stdin.then(read_password).transpose()?;
            let change = UserChange {
                email,
                password,
                admin: Some(make_admin),
                disabled: Some(false),
                groups: Some(groups),
            };
            security(&config)
                .await?
                .put_user(&admin, &name, change, true)
                .await?;
            println!("created user {name}");
        }
        UserCommand::List { config } => {
            for user in security(&config).await?.users(&admin).await? {
                println!(
                    "{}\t{}{}\tgroups: {}",
                    user.name,
                    if user.admin { "admin" } else { "user" },
                    if user.disabled { " (disabled)" } else { "" },
                    user.groups.join(",")
                );
            }
        }
        UserCommand::Disable { name, config } => {
            let change = UserChange {
                disabled: Some(true),
                ..UserChange::default()
            };
            security(&config)
                .await?
                .put_user(&admin, &name, change, false)
                .await?;
            println!("disabled user {name}");
        }
    }
    Ok(())
}

pub(crate) async fn token(command: TokenCommand) -> Result<(), Error> {
    let admin = Caller::admin();
    match command {
        TokenCommand::Create(create) => {
            let request = TokenRequest {
                user: Some(create.user),
                scope: create.scope,
                expires_in: create.expires_in.map(Duration::from_secs),
                description: create.description,
                refreshable: create.refreshable,
            };
            let token = security(&create.config)
                .await?
                .issue_token(&admin, request)
                .await?;
            eprintln!(
                "token {} for {} ({}), shown once:",
                token.record.id, token.record.user, token.record.scope
            );
            println!("{}", token.secret);
            if let Some(refresh) = &token.refresh {
                eprintln!("refresh token, shown once:");
                println!("{refresh}");
            }
        }
        TokenCommand::List { config } => {
            for t in security(&config).await?.tokens(&admin).await? {
                println!(
                    "{}\t{}\t{}\t{}{}",
                    t.id,
                    t.user,
                    t.scope,
                    t.expires_ms
                        .map_or_else(|| "never expires".to_string(), |e| format!("expires {e}")),
                    if t.revoked { "\trevoked" } else { "" }
                );
            }
        }
        TokenCommand::Revoke { id, config } => {
            security(&config).await?.revoke(&admin, &id).await?;
            println!("revoked token {id}");
        }
    }
    Ok(())
}

pub(crate) async fn audit(command: AuditCommand) -> Result<(), Error> {
    match command {
        AuditCommand::Verify { config } => {
            let config = config.load().await?;
            let metadata = open_metadata(&config).await?;
            let checked = metadata.verify_audit().await;
            metadata.close().await;
            println!(
                "audit trail intact: {} entries, each chained to the one before",
                checked?
            );
        }
    }
    Ok(())
}
