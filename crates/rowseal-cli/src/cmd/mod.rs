//! The commands, generic over the database.

mod decrypt_column;
mod encrypt_column;
mod index_check;
mod reindex;
mod rewrap;
mod rotate;
mod shred;
mod status;
mod verify;

use std::sync::Arc;

use rowseal_core::{CountingKeyProvider, FieldSet, KeyHierarchy, KeyMode, RecordKeys, RowKey};
use rowseal_sqlx::SqlxKeyStore;
use serde_json::json;

use crate::cli::{Cli, Command};
use crate::config::{FileConfig, Settings};
use crate::db::{self, CliDb, Kind};
use crate::error::{CliError, ExitCode, Result};
use crate::output::Out;
use crate::registry::TableDef;

/// What every command gets.
pub struct Ctx<D: CliDb> {
    pub pool: sqlx::Pool<D>,
    pub settings: Settings,
    pub out: Out,
}

/// Keys, built on demand (status and init need none).
pub struct Keys {
    pub hierarchy: Arc<KeyHierarchy>,
    pub counter: Arc<CountingKeyProvider>,
    /// The routing, when keys come from a root-keys file.
    pub routing: Option<Arc<rowseal::RootKeys>>,
}

impl Keys {
    /// Provider calls so far, as JSON.
    pub fn calls(&self) -> serde_json::Value {
        let c = self.counter.counts();
        json!({"generate": c.generate, "decrypt": c.decrypt, "reencrypt": c.reencrypt, "total": c.total()})
    }
}

impl<D: CliDb> Ctx<D> {
    /// Builds the key provider and hierarchy over `rowseal_keys`.
    pub async fn keys(&self) -> Result<Keys> {
        let (counter, routing) = crate::provider::build(&self.settings).await?;
        let hierarchy = Arc::new(KeyHierarchy::new(
            counter.clone(),
            Arc::new(SqlxKeyStore::new(self.pool.clone())),
        ));
        Ok(Keys {
            hierarchy,
            counter,
            routing,
        })
    }

    /// A pooled connection.
    pub async fn conn(&self) -> Result<sqlx::pool::PoolConnection<D>> {
        Ok(self.pool.acquire().await?)
    }
}

/// Runs the command; returns the exit code.
pub async fn run(cli: Cli) -> ExitCode {
    let settings = match FileConfig::read(cli.global.config.as_deref())
        .and_then(|file| Settings::of(&cli, file))
    {
        Ok(s) => s,
        Err(e) => {
            Out {
                json: cli.global.json,
            }
            .error(e.code as u8, &e.message);
            return e.code;
        }
    };
    let out = Out {
        json: settings.json,
    };
    match dispatch(cli.command, settings).await {
        Ok(code) => code,
        Err(e) => {
            out.error(e.code as u8, &e.message);
            e.code
        }
    }
}

async fn dispatch(command: Command, settings: Settings) -> Result<ExitCode> {
    let (kind, url) = settings.database()?;
    let out = Out {
        json: settings.json,
    };
    match kind {
        Kind::Postgres => {
            let pool = db::postgres(&url, settings.workers).await?;
            exec(
                Ctx {
                    pool,
                    settings,
                    out,
                },
                command,
            )
            .await
        }
        Kind::MySql => {
            let pool = db::mysql(&url, settings.workers).await?;
            exec(
                Ctx {
                    pool,
                    settings,
                    out,
                },
                command,
            )
            .await
        }
        Kind::Sqlite => {
            let create = matches!(command, Command::Init);
            let pool = db::sqlite(&url, create).await?;
            exec(
                Ctx {
                    pool,
                    settings,
                    out,
                },
                command,
            )
            .await
        }
    }
}

async fn exec<D: CliDb>(ctx: Ctx<D>, command: Command) -> Result<ExitCode> {
    let code = match command {
        Command::Init => init(&ctx).await,
        Command::Status { tables, keys } => status::run(&ctx, &tables, keys).await,
        Command::Rotate {
            tenant,
            all_tenants,
            job,
            dry_run,
            job_args,
        } => {
            rotate::run(
                &ctx,
                rotate::Request {
                    tenant,
                    all_tenants,
                    job,
                    dry_run,
                    tables: job_args.tables,
                },
            )
            .await
        }
        Command::Verify { job_args } => verify::run(&ctx, &job_args.tables).await,
        Command::Rewrap {
            to,
            tenants,
            from,
            in_place,
            dry_run,
            job_args,
        } => {
            let selection = rewrap::Selection {
                tenants,
                from,
                in_place,
            };
            rewrap::run(&ctx, &to, &selection, dry_run, &job_args.tables).await
        }
        Command::DecryptColumn {
            table,
            column,
            into,
            dry_run,
            batch_size: _,
        } => decrypt_column::run(&ctx, &table, &column, &into, dry_run).await,
        Command::EncryptColumn {
            table,
            column,
            dry_run,
            ..
        } => {
            encrypt_column::run(
                &ctx,
                encrypt_column::Request {
                    table,
                    column,
                    dry_run,
                },
            )
            .await
        }
        Command::Reindex {
            tenant,
            backfill_only,
            cache_ttl,
            dry_run,
            job_args,
        } => {
            reindex::run(
                &ctx,
                reindex::Request {
                    tenant,
                    backfill_only,
                    cache_ttl: std::time::Duration::from_secs(cache_ttl),
                    dry_run,
                    tables: job_args.tables,
                },
            )
            .await
        }
        Command::Shred {
            tenant,
            yes_destroy_tenant,
            dry_run,
        } => shred::run(&ctx, &tenant, yes_destroy_tenant.as_deref(), dry_run).await,
    };
    ctx.pool.close().await;
    code
}

async fn init<D: CliDb>(ctx: &Ctx<D>) -> Result<ExitCode> {
    // rowseal's migrator, as the application runs it: creates the tables or
    // upgrades them, recorded in rowseal_migrations.
    let applied = rowseal_sqlx::migrate::run(&ctx.pool)
        .await
        .map_err(|e| match e {
            // A database migrated by a newer rowseal (or a version record
            // this one cannot read): refused, not a failure of rows.
            e @ rowseal_core::Error::Schema { .. } => {
                CliError::new(ExitCode::Refused, e.to_string())
            }
            e => e.into(),
        })?;
    let version = rowseal_sqlx::migrate::latest::<D>();
    ctx.out.emit(
        json!({
            "event": "init",
            "tables": ["rowseal_keys", "rowseal_schema", "rowseal_jobs"],
            "migrations_applied": applied,
            "version": version,
        }),
        || {
            format!(
                "rowseal tables ready: rowseal_keys, rowseal_schema, rowseal_jobs (version {version}, {} migration(s) applied)",
                applied.len()
            )
        },
    );
    Ok(ExitCode::Ok)
}

/// Opens rows of registered tables through the key hierarchy's caches
/// (record keys per tenant-key version in `derived` mode, data keys in `kms`
/// mode).
pub struct RowOpener {
    keys: Arc<KeyHierarchy>,
}

impl RowOpener {
    /// An opener over `keys`.
    pub fn new(keys: Arc<KeyHierarchy>) -> Self {
        RowOpener { keys }
    }

    /// Record keys of a tenant-key version (cached by the key hierarchy).
    pub async fn record_keys(
        &mut self,
        def: &TableDef,
        tenant: &str,
        version: u32,
    ) -> rowseal_core::Result<Arc<RecordKeys>> {
        self.keys.record_keys(&def.spec(), tenant, version).await
    }

    /// The row key of a stored row whose encrypted cells (in the order of
    /// [`TableDef::encrypted_columns`]; NULL is `None`) are `envelopes`, as
    /// [`read_envelopes`] reads them.
    pub async fn open_cells(
        &mut self,
        def: &TableDef,
        tenant: &str,
        pk: Option<&[u8]>,
        header: &[u8],
        envelopes: &[Option<Vec<u8>>],
    ) -> rowseal_core::Result<RowKey> {
        let present = def.present_fields(envelopes.iter().map(Option::is_some))?;
        self.open(def, tenant, pk, header, &present).await
    }

    /// The row key of a stored row whose present (non-NULL) encrypted
    /// fields are `present` (see [`TableDef::present_fields`]; format 2
    /// binds them).
    pub async fn open(
        &mut self,
        def: &TableDef,
        tenant: &str,
        pk: Option<&[u8]>,
        header: &[u8],
        present: &FieldSet,
    ) -> rowseal_core::Result<RowKey> {
        // The library's rule for which row formats it reads, so that the
        // tool and the library report the same row the same way.
        rowseal_sqlx::check_row_format(header)?;
        let parsed = rowseal_core::RowHeader::from_bytes(header)?;
        match (parsed.mode(), parsed.tenant_key_version()) {
            (KeyMode::Derived, Some(v)) => self
                .record_keys(def, tenant, v)
                .await?
                .open_row(pk, header, present),
            _ => {
                let spec = def.spec();
                self.keys
                    .open_row_key(&spec, tenant, pk, header, present)
                    .await
            }
        }
    }
}

/// The encrypted cells (NULL is `None`) of a row selected with
/// [`crate::registry::select_list`], in the order of
/// [`TableDef::encrypted_columns`].
pub fn read_envelopes<R: rowseal_sqlx::DbRow>(
    def: &TableDef,
    row: &R,
) -> Result<Vec<Option<Vec<u8>>>> {
    (0..def.encrypted_columns().len())
        .map(|i| {
            match row.read_value(
                crate::registry::FIRST_ENCRYPTED + i,
                rowseal_sqlx::SqlType::Bytes,
            )? {
                rowseal_sqlx::Value::Bytes(env) => Ok(Some(env)),
                _ => Ok(None),
            }
        })
        .collect()
}

/// A short, value-free description of a core error for reports.
pub fn describe(e: &rowseal_core::Error) -> String {
    e.to_string()
}
