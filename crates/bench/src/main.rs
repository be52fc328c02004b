//! `chronicle-bench run ...` / `chronicle-bench compare ...`; see the crate docs.
//!
//! Exit status: 0 when every workflow verified without RPC errors, 1 when the run had errors,
//! 2 when the harness could not run at all.

use std::process::ExitCode;

use chronicle_bench::cli::{Cli, Command};
use chronicle_bench::compare;
use chronicle_bench::plot::{self, PlotSeries};
use chronicle_bench::ramp::{self, RampLimits};
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("chronicle-bench: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    // On Ctrl-C the command's future is dropped, and with it any Python worker processes, which
    // are killed on drop: nothing is left running.
    let outcome = runtime.block_on(async {
        tokio::select! {
            result = execute(cli.command) => result.map(Some),
            _ = tokio::signal::ctrl_c() => Ok(None),
        }
    });
    match outcome {
        Ok(Some(true)) => ExitCode::SUCCESS,
        Ok(Some(false)) => {
            eprintln!("chronicle-bench: THE RUN HAD ERRORS (see above)");
            ExitCode::from(1)
        }
        Ok(None) => {
            eprintln!("chronicle-bench: interrupted");
            // 128 + SIGINT, as shells report a process ended by Ctrl-C.
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("chronicle-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs the command; `Ok(false)` when workflows failed or RPCs errored.
async fn execute(command: Command) -> anyhow::Result<bool> {
    match command {
        Command::Run(args) => {
            let config = args
                .bench
                .run_config(&args.address, None, args.server_pids.clone())?;
            let report = chronicle_bench::run(&config).await?;
            print!("{}", report.summary());
            if let Some(path) = &args.bench.json {
                report.write_json(path)?;
            }
            if let Some(path) = &args.bench.plot {
                plot::write_svg(
                    path,
                    &format!("{} @ {}", report.scenario.describe(), report.target),
                    &[PlotSeries {
                        label: report.target.clone(),
                        points: &report.timeline,
                    }],
                )?;
            }
            Ok(report.is_clean())
        }
        Command::Compare(args) => {
            let report = compare::compare(
                &args.targets,
                args.repeat,
                args.pause.into(),
                &args.bench,
                |run| {
                    eprintln!(
                        "  {}: {:.1} workflows/s, p99 {:.1} ms, {} failed, {} RPC errors",
                        run.target,
                        run.workflows_per_second,
                        run.latency.p99_ms,
                        run.failed,
                        run.total_rpc_errors()
                    );
                },
            )
            .await?;
            print!("{}", report.table());
            if let Some(path) = &args.bench.json {
                report.write_json(path)?;
            }
            if let Some(path) = &args.bench.plot {
                report.write_plot(path)?;
            }
            Ok(report.is_clean())
        }
        Command::Ramp(args) => {
            let base = args
                .bench
                .run_config(&args.address, None, args.server_pids.clone())?;
            let report = ramp::ramp(
                &base,
                args.start_rate,
                args.step,
                args.step_duration.into(),
                args.max_steps,
                RampLimits {
                    max_p99_ms: args.max_p99_ms,
                    min_throughput_ratio: args.min_throughput_ratio,
                },
                |step| {
                    eprintln!(
                        "  {:.1}/s offered: {:.1}/s done, p99 {:.1} ms: {}",
                        step.offered_rate,
                        step.report.workflows_per_second,
                        step.report.latency.p99_ms,
                        step.degraded.as_deref().unwrap_or("ok")
                    );
                },
            )
            .await?;
            print!("{}", report.table());
            if let Some(path) = &args.bench.json {
                chronicle_bench::report::write_json(path, &report)?;
            }
            if let Some(path) = &args.bench.plot {
                let series: Vec<PlotSeries> = report
                    .steps
                    .iter()
                    .map(|step| PlotSeries {
                        label: format!("{:.0}/s", step.offered_rate),
                        points: &step.report.timeline,
                    })
                    .collect();
                plot::write_svg(path, "ramp", &series)?;
            }
            // Degrading is the expected end of a ramp, not an error of the harness.
            Ok(report.sustained_rate.is_some())
        }
    }
}
