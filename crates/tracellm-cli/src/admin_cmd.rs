//! `tracellm projects …` and `tracellm keys …`: project and API-key management through the
//! server's admin routes. The admin token, when the server requires one, comes from
//! `TRACELLM_ADMIN_TOKEN`.

use clap::{Args, Subcommand};
use serde_json::Value;

use crate::common::Globals;

#[derive(Debug, Subcommand)]
pub enum ProjectsCommand {
    /// Create a project and its first API key (the key is shown once).
    Create {
        /// Project name; its id is the name in lower-case-with-dashes.
        name: String,
        /// Environment of the first key: development, staging or production.
        #[arg(long, default_value = "development")]
        environment: String,
        #[arg(long)]
        description: Option<String>,
    },
    /// List projects.
    List,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an API key for a project (the key is shown once).
    Create(CreateKey),
    /// List keys, without their secrets.
    List {
        /// Only this project's keys.
        #[arg(long)]
        project: Option<String>,
    },
    /// Revoke a key; requests with it are refused from now on.
    Revoke {
        /// The key's id (key_…), as `keys list` shows it.
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct CreateKey {
    #[arg(long)]
    project: String,
    /// development, staging or production.
    #[arg(long, default_value = "development")]
    environment: String,
    /// A label to recognise the key by.
    #[arg(long)]
    name: Option<String>,
}

fn client(g: &Globals) -> tracellm_client::Client {
    let c = tracellm_client::Client::new(g.endpoint.clone());
    match std::env::var("TRACELLM_ADMIN_TOKEN") {
        Ok(t) if !t.is_empty() => c.with_admin_token(t),
        _ => c,
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

fn show_key(k: &Value) {
    println!("API key:      {}", k["key"].as_str().unwrap_or(""));
    println!("  id          {}", k["id"].as_str().unwrap_or(""));
    println!("  project     {}", k["project_id"].as_str().unwrap_or(""));
    println!("  environment {}", k["environment"].as_str().unwrap_or(""));
    println!("Store it now: it is not shown again.");
}

pub fn projects(cmd: ProjectsCommand, g: Globals) -> anyhow::Result<()> {
    let c = client(&g);
    let rt = runtime()?;
    match cmd {
        ProjectsCommand::Create { name, environment, description } => {
            let v = rt.block_on(c.create_project(&name, &environment, description.as_deref()))?;
            if g.json {
                println!("{v}");
            } else {
                println!(
                    "Project:      {} ({})",
                    v["project"]["id"].as_str().unwrap_or(""),
                    v["project"]["name"].as_str().unwrap_or("")
                );
                show_key(&v["api_key"]);
            }
        }
        ProjectsCommand::List => {
            let v = rt.block_on(c.list_projects())?;
            if g.json {
                println!("{v}");
            } else {
                println!("{:<24} {:<24} CREATED", "ID", "NAME");
                for p in v["projects"].as_array().map(Vec::as_slice).unwrap_or_default() {
                    println!(
                        "{:<24} {:<24} {}",
                        p["id"].as_str().unwrap_or(""),
                        p["name"].as_str().unwrap_or(""),
                        p["created_at"].as_str().unwrap_or("")
                    );
                }
            }
        }
    }
    Ok(())
}

pub fn keys(cmd: KeysCommand, g: Globals) -> anyhow::Result<()> {
    let c = client(&g);
    let rt = runtime()?;
    match cmd {
        KeysCommand::Create(a) => {
            let v = rt.block_on(c.create_api_key(&a.project, &a.environment, a.name.as_deref()))?;
            if g.json {
                println!("{v}");
            } else {
                show_key(&v["api_key"]);
            }
        }
        KeysCommand::List { project } => {
            let v = rt.block_on(c.list_api_keys(project.as_deref()))?;
            if g.json {
                println!("{v}");
            } else {
                println!(
                    "{:<18} {:<20} {:<12} {:<12} {:<8} LAST USED",
                    "ID", "PROJECT", "ENVIRONMENT", "KEY", "STATUS"
                );
                for k in v["api_keys"].as_array().map(Vec::as_slice).unwrap_or_default() {
                    let status = if k["revoked_at"].is_string() { "revoked" } else { "active" };
                    let used = k["last_used_at"]
                        .as_str()
                        .and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok())
                        .map_or("never".to_string(), |t| {
                            t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
                        });
                    println!(
                        "{:<18} {:<20} {:<12} {:<12} {status:<8} {used}",
                        k["id"].as_str().unwrap_or(""),
                        k["project_id"].as_str().unwrap_or(""),
                        k["environment"].as_str().unwrap_or(""),
                        format!("{}…", k["prefix"].as_str().unwrap_or("")),
                    );
                }
            }
        }
        KeysCommand::Revoke { id } => {
            let v = rt.block_on(c.revoke_api_key(&id))?;
            if g.json {
                println!("{v}");
            } else {
                println!("Revoked {id}: requests with it are now refused.");
            }
        }
    }
    Ok(())
}
