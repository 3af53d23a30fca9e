//! The buildpack builder: stages an app inside the staging container the
//! way buildpackapplifecycle's builder does. It picks the buildpacks
//! (detect, or the named ones), runs their supply/finalize (or legacy
//! compile/release) scripts, works out the process types, and writes the
//! droplet, the build-artifacts cache and the staging result.
//!
//! Each phase's failure maps to Cloud Foundry's builder exit code
//! ([`StagingFailure`]), which the cell reports and the API turns into
//! `build.error`.

use crate::archive;
use crate::buildpack::{Buildpack, deps_index, supply_cache_name};
use crate::console::{Console, ScriptError, Stdout, run_script};
use crate::env::database_url;
use crate::process_types::{self, ProcessTypes, YamlError};
use kiln_model::staging::{
    BuildpackMetadata, BuildpackSidecar, LifecycleMetadata, StagingFailure, StagingResult,
};
use serde::Serialize;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Flags of `kiln lifecycle builder`, with buildpackapplifecycle's defaults.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct BuilderArgs {
    /// The app's files; buildpacks compile it in place
    #[arg(long, default_value = "/tmp/app")]
    pub build_dir: PathBuf,
    /// Holds one directory per buildpack, named by its key
    #[arg(long, default_value = "/tmp/buildpacks")]
    pub buildpacks_dir: PathBuf,
    /// Buildpack keys, comma separated: candidates for detection, or the
    /// buildpacks to run in order with --skip-detect
    #[arg(long, value_delimiter = ',')]
    pub buildpack_order: Vec<String>,
    /// Run the named buildpacks (supply..., final) instead of detecting one
    #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true",
          action = clap::ArgAction::Set)]
    pub skip_detect: bool,
    /// Where the droplet (tar.gz) is written
    #[arg(long, default_value = "/tmp/droplet")]
    pub output_droplet: PathBuf,
    /// Where the staging result (JSON) is written
    #[arg(long, default_value = "/tmp/result.json")]
    pub output_metadata: PathBuf,
    /// The build-artifacts cache restored from the previous staging
    #[arg(long, default_value = "/tmp/cache")]
    pub build_artifacts_cache_dir: PathBuf,
    /// Where the new build-artifacts cache (tar.gz) is written
    #[arg(long, default_value = "/tmp/output-cache")]
    pub output_build_artifacts_cache: PathBuf,
}

impl Default for BuilderArgs {
    fn default() -> Self {
        BuilderArgs {
            build_dir: "/tmp/app".into(),
            buildpacks_dir: "/tmp/buildpacks".into(),
            buildpack_order: Vec::new(),
            skip_detect: false,
            output_droplet: "/tmp/droplet".into(),
            output_metadata: "/tmp/result.json".into(),
            build_artifacts_cache_dir: "/tmp/cache".into(),
            output_build_artifacts_cache: "/tmp/output-cache".into(),
        }
    }
}

/// A script that failed or printed something unusable.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Script(#[from] ScriptError),
    #[error(transparent)]
    Yaml(#[from] YamlError),
}

/// Why staging failed. [`BuilderError::failure`] gives the exit code.
#[derive(Debug, thiserror::Error)]
pub enum BuilderError {
    #[error("invalid builder arguments: {0}")]
    Usage(String),
    #[error("none of the buildpacks detected a compatible application")]
    NoAppDetected,
    #[error("buildpack {key} not found in {}: it needs a bin/ directory", dir.display())]
    BuildpackNotFound { key: String, dir: PathBuf },
    #[error(
        "buildpack {key} has no bin/supply: it does not support multi-buildpack apps and can only be the last buildpack"
    )]
    NoSupplyScript { key: String },
    #[error("supply of buildpack {key} failed: {source}")]
    Supply { key: String, source: ScriptError },
    #[error("finalize of buildpack {key} failed: {source}")]
    Finalize { key: String, source: ScriptError },
    #[error("compile of buildpack {key} failed: {source}")]
    Compile { key: String, source: ScriptError },
    #[error("release of buildpack {key} failed: {source}")]
    Release { key: String, source: StepError },
    #[error("invalid {}: {source}", path.display())]
    InvalidYaml { path: PathBuf, source: YamlError },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl BuilderError {
    /// The staging failure this is, hence the builder's exit code.
    pub fn failure(&self) -> StagingFailure {
        match self {
            BuilderError::NoAppDetected => StagingFailure::NoAppDetected,
            BuilderError::BuildpackNotFound { .. }
            | BuilderError::NoSupplyScript { .. }
            | BuilderError::Supply { .. } => StagingFailure::SupplyFailed,
            BuilderError::Finalize { .. } => StagingFailure::FinalizeFailed,
            BuilderError::Compile { .. } => StagingFailure::BuildpackCompileFailed,
            BuilderError::Release { .. } => StagingFailure::BuildpackReleaseFailed,
            BuilderError::Usage(_) | BuilderError::InvalidYaml { .. } | BuilderError::Io { .. } => {
                StagingFailure::Other
            }
        }
    }

    /// The line the builder prints on stderr when it fails: Cloud Foundry's
    /// message for the failed phase, then the detail.
    pub fn report(&self) -> String {
        let headline = match self.failure() {
            // Printed verbatim: users and tools know this exact sentence.
            StagingFailure::NoAppDetected => {
                return "None of the buildpacks detected a compatible application".into();
            }
            StagingFailure::BuildpackCompileFailed => "Failed to compile droplet",
            StagingFailure::BuildpackReleaseFailed => "Failed to build droplet release",
            StagingFailure::SupplyFailed => "Failed to run all supply scripts",
            StagingFailure::FinalizeFailed => "Failed to run finalize script",
            StagingFailure::Other => "Staging failed",
        };
        format!("{headline}: {self}")
    }
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> BuilderError {
    let path = path.to_path_buf();
    move |source| BuilderError::Io { what, path, source }
}

/// `staging_info.yml` in the droplet (JSON, which is YAML too): what the
/// launcher falls back to when it is given no start command.
#[derive(Debug, Serialize)]
struct StagingInfo<'a> {
    detected_buildpack: &'a str,
    start_command: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    config: Option<StagingInfoConfig<'a>>,
}

#[derive(Debug, Serialize)]
struct StagingInfoConfig<'a> {
    entrypoint_prefix: &'a str,
}

/// Paths of one staging run, absolute, and the scratch "contents" dir the
/// droplet is assembled in.
struct Staging<'a> {
    console: &'a Console,
    build_dir: PathBuf,
    buildpacks_dir: PathBuf,
    cache_dir: PathBuf,
    keys: Vec<String>,
    skip_detect: bool,
    /// Number of `deps/<i>` dirs: every named buildpack, or the one detected.
    n_deps: usize,
    contents: tempfile::TempDir,
    database_url: Option<String>,
}

impl Staging<'_> {
    fn deps_dir(&self) -> PathBuf {
        self.contents.path().join("deps")
    }

    fn profile_dir(&self) -> PathBuf {
        self.contents.path().join("profile.d")
    }

    fn deps_index(&self, index: usize) -> String {
        deps_index(index, self.n_deps)
    }

    fn final_index(&self) -> usize {
        self.n_deps - 1
    }

    fn supply_keys(&self) -> &[String] {
        if self.skip_detect {
            &self.keys[..self.keys.len() - 1]
        } else {
            &[]
        }
    }

    fn supply_cache_dir(&self, key: &str) -> PathBuf {
        self.cache_dir.join(supply_cache_name(key))
    }

    fn final_cache_dir(&self) -> PathBuf {
        self.cache_dir.join("final")
    }

    /// A buildpack script invocation; the environment is the builder's own
    /// (CF_STACK, VCAP_APPLICATION, the app's variables...) plus
    /// `DATABASE_URL` when one can be derived.
    fn command(&self, script: &Path, args: &[&Path]) -> Command {
        let mut command = Command::new(script);
        command.args(args);
        if let Some(url) = &self.database_url {
            command.env("DATABASE_URL", url);
        }
        command
    }

    fn header(&self, line: &str) {
        self.console.say(&format!("-----> {line}"));
    }
}

/// Stage the app. On success the droplet, the cache and the result file are
/// written and the result is returned.
pub fn build(args: &BuilderArgs, console: &Console) -> Result<StagingResult, BuilderError> {
    for (flag, value) in [
        ("--build-dir", &args.build_dir),
        ("--buildpacks-dir", &args.buildpacks_dir),
        ("--output-droplet", &args.output_droplet),
        ("--output-metadata", &args.output_metadata),
        (
            "--build-artifacts-cache-dir",
            &args.build_artifacts_cache_dir,
        ),
        (
            "--output-build-artifacts-cache",
            &args.output_build_artifacts_cache,
        ),
    ] {
        if value.as_os_str().is_empty() {
            return Err(BuilderError::Usage(format!("{flag} must not be empty")));
        }
    }
    let keys: Vec<String> = args
        .buildpack_order
        .iter()
        .map(|key| key.trim().to_owned())
        .filter(|key| !key.is_empty())
        .collect();
    if args.skip_detect && keys.is_empty() {
        return Err(BuilderError::Usage(
            "--skip-detect needs at least one buildpack in --buildpack-order".into(),
        ));
    }
    let absolute = |path: &Path| std::path::absolute(path).map_err(io_error("resolving", path));
    let output_droplet = absolute(&args.output_droplet)?;
    let output_metadata = absolute(&args.output_metadata)?;
    let output_cache = absolute(&args.output_build_artifacts_cache)?;

    let contents = tempfile::Builder::new()
        .prefix("contents")
        .tempdir()
        .map_err(io_error(
            "creating the droplet contents dir in",
            &std::env::temp_dir(),
        ))?;
    let staging = Staging {
        console,
        build_dir: absolute(&args.build_dir)?,
        buildpacks_dir: absolute(&args.buildpacks_dir)?,
        cache_dir: absolute(&args.build_artifacts_cache_dir)?,
        n_deps: if args.skip_detect { keys.len() } else { 1 },
        keys,
        skip_detect: args.skip_detect,
        contents,
        database_url: std::env::var("VCAP_SERVICES")
            .ok()
            .and_then(|services| database_url(&services)),
    };
    set_up(
        &staging,
        &[&output_droplet, &output_metadata, &output_cache],
    )?;

    let (final_buildpack, detect_output) = if staging.skip_detect {
        (run_supply_buildpacks(&staging)?, String::new())
    } else {
        detect(&staging)?
    };
    let used_keys: Vec<String> = if staging.skip_detect {
        staging.keys.clone()
    } else {
        vec![final_buildpack.key.clone()]
    };

    let compiled = compile(&staging, &final_buildpack).and_then(|()| {
        let process_types = process_types(&staging, &final_buildpack)?;
        let sidecars = sidecars(&staging, &process_types)?;
        let (buildpacks, entrypoint_prefix) =
            buildpacks_metadata(&staging, &used_keys, &detect_output);
        Ok((process_types, sidecars, buildpacks, entrypoint_prefix))
    });
    let (process_types, sidecars, buildpacks, entrypoint_prefix) = match compiled {
        Ok(compiled) => compiled,
        Err(error) => {
            // Like Cloud Foundry, record which buildpacks ran even when the
            // build failed; this is best effort, the failure is what counts.
            let (buildpacks, _) = buildpacks_metadata(&staging, &used_keys, &detect_output);
            let _ = write_result(
                &output_metadata,
                &staging_result(buildpacks, ProcessTypes::new(), Vec::new()),
            );
            return Err(error);
        }
    };

    let web = process_types.get("web").map(String::as_str).unwrap_or("");
    if web.is_empty() {
        console.warn("No start command specified by buildpack or via Procfile.");
        console.warn("App will not start unless a command is provided at runtime.");
    }
    let detected_buildpack = buildpacks.last().map(|bp| bp.name.as_str()).unwrap_or("");
    let staging_info = StagingInfo {
        detected_buildpack,
        start_command: web,
        config: entrypoint_prefix
            .as_deref()
            .map(|entrypoint_prefix| StagingInfoConfig { entrypoint_prefix }),
    };
    let staging_info_path = staging.contents.path().join("staging_info.yml");
    let staging_info = serde_json::to_vec(&staging_info).expect("staging info serializes");
    fs::write(&staging_info_path, staging_info).map_err(io_error("writing", &staging_info_path))?;

    package(&staging, &output_droplet, &output_cache)?;

    let result = staging_result(buildpacks, process_types, sidecars);
    write_result(&output_metadata, &result)?;
    Ok(result)
}

fn set_up(staging: &Staging, outputs: &[&Path]) -> Result<(), BuilderError> {
    let mut dirs: Vec<PathBuf> = outputs
        .iter()
        .filter_map(|output| output.parent().map(Path::to_path_buf))
        .collect();
    dirs.push(staging.final_cache_dir());
    dirs.extend(
        staging
            .supply_keys()
            .iter()
            .map(|key| staging.supply_cache_dir(key)),
    );
    dirs.extend((0..staging.n_deps).map(|i| staging.deps_dir().join(staging.deps_index(i))));
    dirs.push(staging.profile_dir());
    for dir in &dirs {
        fs::create_dir_all(dir).map_err(io_error("creating", dir))?;
    }

    // The restored cache keeps only what this staging's buildpacks own, so
    // caches of buildpacks no longer used do not grow it forever.
    let mut keep = vec![staging.final_cache_dir()];
    keep.extend(
        staging
            .supply_keys()
            .iter()
            .map(|key| staging.supply_cache_dir(key)),
    );
    let entries =
        fs::read_dir(&staging.cache_dir).map_err(io_error("reading", &staging.cache_dir))?;
    for entry in entries {
        let path = entry
            .map_err(io_error("reading", &staging.cache_dir))?
            .path();
        if keep.contains(&path) {
            continue;
        }
        let removed = if path.is_dir() && !path.is_symlink() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        removed.map_err(io_error("cleaning the build cache of", &path))?;
    }
    Ok(())
}

fn locate(staging: &Staging, key: &str) -> Result<Buildpack, BuilderError> {
    Buildpack::locate(&staging.buildpacks_dir, key).ok_or_else(|| BuilderError::BuildpackNotFound {
        key: key.to_owned(),
        dir: staging.buildpacks_dir.clone(),
    })
}

/// Named mode: run `bin/supply` of every buildpack but the last; return the
/// last (the final buildpack).
fn run_supply_buildpacks(staging: &Staging) -> Result<Buildpack, BuilderError> {
    // Check them all first: a buildpack that cannot supply should fail the
    // staging before any other one has spent minutes downloading things.
    let supply_buildpacks = staging
        .supply_keys()
        .iter()
        .map(|key| {
            let buildpack = locate(staging, key)?;
            if !buildpack.has_script("supply") {
                return Err(BuilderError::NoSupplyScript { key: key.clone() });
            }
            Ok(buildpack)
        })
        .collect::<Result<Vec<_>, _>>()?;
    for (index, buildpack) in supply_buildpacks.iter().enumerate() {
        staging.header(&format!("Running supply for {}", buildpack.key));
        let command = staging.command(
            &buildpack.script("supply"),
            &[
                &staging.build_dir,
                &staging.supply_cache_dir(&buildpack.key),
                &staging.deps_dir(),
                Path::new(&staging.deps_index(index)),
            ],
        );
        run_script(staging.console, command, Stdout::Stream).map_err(|source| {
            BuilderError::Supply {
                key: buildpack.key.clone(),
                source,
            }
        })?;
    }
    locate(
        staging,
        staging.keys.last().expect("named mode has buildpacks"),
    )
}

/// Detect mode: the first buildpack whose `bin/detect` exits 0, and what it
/// printed.
fn detect(staging: &Staging) -> Result<(Buildpack, String), BuilderError> {
    staging.header("Detecting buildpack");
    for key in &staging.keys {
        let Some(buildpack) = Buildpack::locate(&staging.buildpacks_dir, key) else {
            staging.console.warn(&format!(
                "skipping buildpack {key}: no bin/ directory in {}",
                staging.buildpacks_dir.join(key).display()
            ));
            continue;
        };
        let script = buildpack.script("detect");
        match fs::metadata(&script) {
            Err(error) => {
                staging.console.warn(&format!(
                    "skipping buildpack {key}: {}: {error}",
                    script.display()
                ));
                continue;
            }
            Ok(metadata) if metadata.permissions().mode() & 0o111 != 0o111 => {
                staging
                    .console
                    .say("WARNING: buildpack script '/bin/detect' is not executable");
            }
            Ok(_) => {}
        }
        let command = staging.command(&script, &[&staging.build_dir]);
        // A detect that fails to run is a buildpack that does not detect;
        // its stderr has been streamed, so the user can see why.
        if let Ok(output) = run_script(staging.console, command, Stdout::Capture) {
            let output = String::from_utf8_lossy(&output).trim().to_owned();
            if output.is_empty() {
                staging.header(&format!("Detected buildpack {key}"));
            } else {
                staging.header(&format!("Detected buildpack {key}: {output}"));
            }
            return Ok((buildpack, output));
        }
    }
    Err(BuilderError::NoAppDetected)
}

/// The final buildpack's build: supply (if any) + finalize, or legacy
/// compile.
fn compile(staging: &Staging, buildpack: &Buildpack) -> Result<(), BuilderError> {
    let index = staging.deps_index(staging.final_index());
    let cache_dir = staging.final_cache_dir();
    let deps_dir = staging.deps_dir();
    let key = &buildpack.key;
    if buildpack.has_script("finalize") {
        if buildpack.has_script("supply") {
            staging.header(&format!("Running supply for {key}"));
            let command = staging.command(
                &buildpack.script("supply"),
                &[&staging.build_dir, &cache_dir, &deps_dir, Path::new(&index)],
            );
            run_script(staging.console, command, Stdout::Stream).map_err(|source| {
                BuilderError::Supply {
                    key: key.clone(),
                    source,
                }
            })?;
        }
        staging.header(&format!("Running finalize for {key}"));
        let command = staging.command(
            &buildpack.script("finalize"),
            &[
                &staging.build_dir,
                &cache_dir,
                &deps_dir,
                Path::new(&index),
                &staging.profile_dir(),
            ],
        );
        run_script(staging.console, command, Stdout::Stream).map_err(|source| {
            BuilderError::Finalize {
                key: key.clone(),
                source,
            }
        })?;
        Ok(())
    } else {
        if !staging.supply_keys().is_empty() {
            staging.console.warn(
                "Warning: the last buildpack is not compatible with multi-buildpack apps and \
                 cannot make use of any dependencies supplied by the buildpacks specified before it",
            );
        }
        // A legacy buildpack has no deps dir of its own.
        let own_deps = deps_dir.join(&index);
        fs::remove_dir_all(&own_deps).map_err(io_error("removing", &own_deps))?;
        staging.header(&format!("Running compile for {key}"));
        let command = staging.command(
            &buildpack.script("compile"),
            &[&staging.build_dir, &cache_dir],
        );
        run_script(staging.console, command, Stdout::Stream).map_err(|source| {
            BuilderError::Compile {
                key: key.clone(),
                source,
            }
        })?;
        Ok(())
    }
}

fn read_yaml_file<T>(
    path: &Path,
    parse: fn(&str) -> Result<T, YamlError>,
) -> Result<Option<T>, BuilderError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_error("reading", path)(error)),
    };
    parse(&text)
        .map(Some)
        .map_err(|source| BuilderError::InvalidYaml {
            path: path.to_path_buf(),
            source,
        })
}

/// Process types, later sources overriding earlier ones by type: supply
/// buildpacks' `launch.yml`, then the final buildpack's `launch.yml` or
/// `bin/release`, then the app's `Procfile`.
fn process_types(
    staging: &Staging,
    final_buildpack: &Buildpack,
) -> Result<ProcessTypes, BuilderError> {
    let mut types = ProcessTypes::new();
    let launch_yml = |index: usize| {
        staging
            .deps_dir()
            .join(staging.deps_index(index))
            .join("launch.yml")
    };
    for index in 0..staging.supply_keys().len() {
        if let Some(found) = read_yaml_file(&launch_yml(index), process_types::from_launch_yml)? {
            types.extend(found);
        }
    }
    match read_yaml_file(
        &launch_yml(staging.final_index()),
        process_types::from_launch_yml,
    )? {
        Some(found) => types.extend(found),
        None => types.extend(release(staging, final_buildpack)?),
    }
    let procfile = staging.build_dir.join("Procfile");
    if let Some(found) = read_yaml_file(&procfile, process_types::from_procfile)? {
        types.extend(found);
    }
    Ok(types)
}

/// Sidecars the buildpacks' `launch.yml` files declare, in buildpack order,
/// a later one replacing an earlier one of the same name (as
/// buildpackapplifecycle merges processes by type); one whose name is also
/// a process type of the droplet (a `Procfile` entry, say) is a process.
fn sidecars(
    staging: &Staging,
    process_types: &ProcessTypes,
) -> Result<Vec<BuildpackSidecar>, BuilderError> {
    let mut indexes: Vec<usize> = (0..staging.supply_keys().len()).collect();
    indexes.push(staging.final_index());
    indexes.dedup();
    let mut sidecars: Vec<BuildpackSidecar> = Vec::new();
    for index in indexes {
        let path = staging
            .deps_dir()
            .join(staging.deps_index(index))
            .join("launch.yml");
        let Some(found) = read_yaml_file(&path, process_types::sidecars_from_launch_yml)? else {
            continue;
        };
        for sidecar in found {
            sidecars.retain(|s| s.name != sidecar.name);
            sidecars.push(sidecar);
        }
    }
    sidecars.retain(|s| !process_types.contains_key(&s.name));
    Ok(sidecars)
}

fn release(staging: &Staging, buildpack: &Buildpack) -> Result<ProcessTypes, BuilderError> {
    let failed = |source: StepError| BuilderError::Release {
        key: buildpack.key.clone(),
        source,
    };
    staging.header(&format!("Running release for {}", buildpack.key));
    let command = staging.command(&buildpack.script("release"), &[&staging.build_dir]);
    let output =
        run_script(staging.console, command, Stdout::Capture).map_err(|e| failed(e.into()))?;
    process_types::from_release(&String::from_utf8_lossy(&output)).map_err(|e| failed(e.into()))
}

/// Key, name and version of each buildpack used (from `deps/<i>/config.yml`),
/// and the last one's entrypoint prefix. A detected buildpack that names
/// itself nowhere is named by its detect output.
fn buildpacks_metadata(
    staging: &Staging,
    keys: &[String],
    detect_output: &str,
) -> (Vec<BuildpackMetadata>, Option<String>) {
    let mut entrypoint_prefix = None;
    let buildpacks = keys
        .iter()
        .enumerate()
        .map(|(index, key)| {
            let path = staging
                .deps_dir()
                .join(staging.deps_index(index))
                .join("config.yml");
            let config = fs::read_to_string(path)
                .map(|text| process_types::buildpack_config(&text))
                .unwrap_or_default();
            entrypoint_prefix = config.entrypoint_prefix.filter(|prefix| !prefix.is_empty());
            let mut name = config.name.unwrap_or_default();
            if name.is_empty() && !staging.skip_detect {
                name = detect_output.to_owned();
            }
            BuildpackMetadata {
                key: key.clone(),
                name,
                version: config.version.unwrap_or_default(),
            }
        })
        .collect();
    (buildpacks, entrypoint_prefix)
}

fn staging_result(
    buildpacks: Vec<BuildpackMetadata>,
    process_types: ProcessTypes,
    sidecars: Vec<BuildpackSidecar>,
) -> StagingResult {
    let last = buildpacks.last().cloned().unwrap_or_default();
    StagingResult {
        lifecycle_type: "buildpack".into(),
        lifecycle_metadata: LifecycleMetadata {
            buildpack_key: last.key,
            detected_buildpack: last.name,
            buildpacks,
            docker_image: String::new(),
        },
        process_types,
        execution_metadata: String::new(),
        sidecars,
    }
}

fn write_result(path: &Path, result: &StagingResult) -> Result<(), BuilderError> {
    let json = serde_json::to_vec(result).expect("staging result serializes");
    fs::write(path, json).map_err(io_error("writing", path))
}

/// Droplet = the contents dir plus the compiled app as `./app`; cache = the
/// build-artifacts cache dir.
fn package(
    staging: &Staging,
    output_droplet: &Path,
    output_cache: &Path,
) -> Result<(), BuilderError> {
    staging.header("Packaging droplet");
    for name in ["tmp", "logs"] {
        let dir = staging.contents.path().join(name);
        fs::create_dir_all(&dir).map_err(io_error("creating", &dir))?;
    }
    // The app is archived from where it was compiled rather than copied
    // into the contents dir first: same archive, half the disk writes.
    let skipped = archive::write_tar_gz(
        output_droplet,
        staging.contents.path(),
        &[(&staging.build_dir, Path::new("app"))],
    )
    .map_err(io_error("writing the droplet", output_droplet))?;
    for path in skipped {
        staging.console.warn(&format!(
            "warning: {} left out of the droplet: not a file, directory or symlink",
            path.display()
        ));
    }
    archive::write_tar_gz(output_cache, &staging.cache_dir, &[])
        .map_err(io_error("writing the build artifacts cache", output_cache))?;
    Ok(())
}
