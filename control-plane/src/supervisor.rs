//! Supervised background tasks.
//!
//! Every long-running task of the control plane (servers, watchers, the usage folder, Envoy's
//! supervision) is registered here with a name and a factory that makes one run of it. A run
//! that fails (returns an error or panics) is logged and a new one started after an exponential
//! [`Backoff`]; a run that returns `Ok(())` is done and stays stopped (the PostgreSQL change
//! listener returns at once on SQLite, for one). Restarts are counted per task ([`Stats`]).
//!
//! Shutdown goes stage by stage, in the order the stages were added: all tasks of a stage are
//! told to stop together, and the next stage begins only when each of them has ended, within the
//! stage's grace period (it is aborted after that). A task registered with
//! [`Supervisor::spawn_graceful`] gets a [`Stop`] and finishes its work itself (a server closes
//! its listener and lets requests in flight end); one registered with [`Supervisor::spawn`] is
//! simply aborted when its stage stops.
//!
//! Dropping a supervisor without [`Supervisor::shutdown`] tells every stage to stop at once, in
//! no particular order.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// When a failed task is started again: after `initial`, doubled with every failure in a row,
/// at most `max`. A run that lasted `healthy_after` or longer starts the count over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before restarting after a first failure.
    pub initial: Duration,
    /// Longest delay between restarts.
    pub max: Duration,
    /// A run at least this long counts as healthy: its failure is a first failure again.
    pub healthy_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { initial: Duration::from_secs(1), max: Duration::from_secs(60), healthy_after: Duration::from_secs(60) }
    }
}

impl Backoff {
    /// The delay before restarting after the `failures`-th failure in a row (1 for the first; 0
    /// is taken as 1).
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.initial.saturating_mul(1 << doublings).min(self.max)
    }

    /// Failures in a row once a run of `ran_for` has failed, `previous` being the count before it.
    pub fn failures_after(&self, previous: u32, ran_for: Duration) -> u32 {
        if ran_for >= self.healthy_after {
            1
        } else {
            previous.saturating_add(1)
        }
    }
}

/// Tells a graceful task that its stage is stopping.
#[derive(Debug, Clone)]
pub struct Stop(watch::Receiver<bool>);

impl Stop {
    /// Resolves once the task's stage is told to stop (or its supervisor is gone).
    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.0.clone();
        async move {
            // An error means the sender, the supervisor, is gone: that is a stop too.
            let _ = rx.wait_for(|stopped| *stopped).await;
        }
    }

    /// Whether the task's stage has been told to stop.
    pub fn is_stopped(&self) -> bool {
        *self.0.borrow() || self.0.has_changed().is_err()
    }
}

/// What one run of a task returns: `()` (the task is done) or a `Result`, whose error is a
/// failure.
pub trait Outcome {
    /// The run's result.
    fn into_result(self) -> anyhow::Result<()>;
}

impl Outcome for () {
    fn into_result(self) -> anyhow::Result<()> {
        Ok(())
    }
}

impl<E: Into<anyhow::Error>> Outcome for Result<(), E> {
    fn into_result(self) -> anyhow::Result<()> {
        self.map_err(Into::into)
    }
}

#[derive(Debug)]
struct TaskStats {
    name: &'static str,
    restarts: AtomicU64,
    running: AtomicBool,
}

/// One supervised task's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskStatus {
    /// The name it was registered with.
    pub name: &'static str,
    /// Runs started after a failure.
    pub restarts: u64,
    /// Whether a run is under way (false while waiting to restart, and once done or stopped).
    pub running: bool,
}

/// The supervised tasks' counters, in registration order; a cheap handle to clone into whatever
/// renders metrics.
#[derive(Debug, Clone, Default)]
pub struct Stats(Arc<Mutex<Vec<Arc<TaskStats>>>>);

impl Stats {
    fn add(&self, name: &'static str) -> Arc<TaskStats> {
        let task = Arc::new(TaskStats { name, restarts: AtomicU64::new(0), running: AtomicBool::new(false) });
        self.0.lock().unwrap_or_else(PoisonError::into_inner).push(task.clone());
        task
    }

    /// Each task's name, restarts and whether it runs.
    pub fn tasks(&self) -> Vec<TaskStatus> {
        let tasks = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        tasks
            .iter()
            .map(|t| TaskStatus {
                name: t.name,
                restarts: t.restarts.load(Ordering::Relaxed),
                running: t.running.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Registers the tasks' metrics: `aqueduct_task_restarts_total{task="…"}` (counter) and
    /// `aqueduct_task_running{task="…"}` (gauge), as they stand now.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        use prometheus_client::metrics::counter::Counter;
        use prometheus_client::metrics::family::Family;
        use prometheus_client::metrics::gauge::Gauge;
        let restarts = Family::<Vec<(String, String)>, Counter>::default();
        let running = Family::<Vec<(String, String)>, Gauge>::default();
        for t in self.tasks() {
            let labels = vec![("task".to_string(), t.name.to_string())];
            restarts.get_or_create(&labels).inc_by(t.restarts);
            running.get_or_create(&labels).set(i64::from(t.running));
        }
        registry.register("aqueduct_task_restarts", "Restarts of a background task after it failed", restarts);
        registry.register("aqueduct_task_running", "Whether a background task is running (1) or not (0)", running);
    }
}

/// A stage of a [`Supervisor`], from [`Supervisor::stage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageId(usize);

#[derive(Debug)]
struct Stage {
    name: &'static str,
    grace: Duration,
    stop: watch::Sender<bool>,
    runners: Vec<(&'static str, JoinHandle<()>)>,
}

/// Runs background tasks, restarts them when they fail and stops them in order.
#[derive(Debug)]
pub struct Supervisor {
    backoff: Backoff,
    stages: Vec<Stage>,
    stats: Stats,
}

/// Extra time a stage waits, beyond its grace, for a task it aborted to end.
const ABORT_MARGIN: Duration = Duration::from_secs(1);

impl Supervisor {
    /// A supervisor restarting failed tasks after `backoff`.
    pub fn new(backoff: Backoff) -> Self {
        Self { backoff, stages: Vec::new(), stats: Stats::default() }
    }

    /// Adds a stage: stages stop in the order they were added. A graceful task of this stage
    /// gets `grace` to end once told to stop.
    pub fn stage(&mut self, name: &'static str, grace: Duration) -> StageId {
        let (stop, _) = watch::channel(false);
        self.stages.push(Stage { name, grace, stop, runners: Vec::new() });
        StageId(self.stages.len() - 1)
    }

    /// Runs `factory()` as task `name` in `stage`, and again whenever a run fails; a run is
    /// aborted when its stage stops.
    ///
    /// # Panics
    ///
    /// If `stage` comes from another supervisor with fewer stages.
    pub fn spawn<F, Fut>(&mut self, stage: StageId, name: &'static str, mut factory: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: Outcome,
    {
        self.start(stage, name, false, move |_| factory());
    }

    /// Runs `factory(stop)` as task `name` in `stage`, and again whenever a run fails. When the
    /// stage stops, `stop` resolves and the run has the stage's grace period to end before it is
    /// aborted.
    ///
    /// # Panics
    ///
    /// If `stage` comes from another supervisor with fewer stages.
    pub fn spawn_graceful<F, Fut>(&mut self, stage: StageId, name: &'static str, factory: F)
    where
        F: FnMut(Stop) -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: Outcome,
    {
        self.start(stage, name, true, factory);
    }

    fn start<F, Fut>(&mut self, stage: StageId, name: &'static str, graceful: bool, factory: F)
    where
        F: FnMut(Stop) -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: Outcome,
    {
        let stats = self.stats.add(name);
        let stage = &mut self.stages[stage.0];
        let task = Task {
            name,
            graceful,
            grace: stage.grace,
            backoff: self.backoff,
            stats,
            stop: Stop(stage.stop.subscribe()),
        };
        stage.runners.push((name, tokio::spawn(task.run(factory))));
    }

    /// The tasks' counters (for `/metrics`).
    pub fn stats(&self) -> Stats {
        self.stats.clone()
    }

    /// Stops the stages in the order they were added, each once the previous one has ended.
    pub async fn shutdown(mut self) {
        for stage in std::mem::take(&mut self.stages) {
            let started = Instant::now();
            tracing::info!(stage = stage.name, tasks = stage.runners.len(), "stopping background tasks");
            let _ = stage.stop.send(true);
            let waits = stage.runners.into_iter().map(|(name, runner)| async move {
                let mut runner = AbortOnDrop(runner);
                // The runner ends its task within the grace period; this only guards against a
                // task that does not even end when aborted (blocking code).
                if tokio::time::timeout(stage.grace + ABORT_MARGIN, &mut runner.0).await.is_err() {
                    tracing::warn!(
                        task = name,
                        stage = stage.name,
                        "background task still running after its abort; leaving it"
                    );
                }
            });
            futures::future::join_all(waits).await;
            tracing::info!(stage = stage.name, elapsed_ms = started.elapsed().as_millis(), "background tasks stopped");
        }
    }
}

/// A task's handle that aborts it when dropped (a plain `JoinHandle` detaches it).
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One registered task: its runs, one at a time, until its stage stops.
struct Task {
    name: &'static str,
    graceful: bool,
    grace: Duration,
    backoff: Backoff,
    stats: Arc<TaskStats>,
    stop: Stop,
}

impl Task {
    async fn run<F, Fut>(self, mut factory: F)
    where
        F: FnMut(Stop) -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: Outcome,
    {
        let name = self.name;
        let mut failures = 0u32;
        while !self.stop.is_stopped() {
            let started = Instant::now();
            self.stats.running.store(true, Ordering::Relaxed);
            let ended = match std::panic::catch_unwind(AssertUnwindSafe(|| factory(self.stop.clone()))) {
                Ok(run) => self.one_run(run).await,
                Err(panic) => Some(Err(anyhow::anyhow!("panicked: {}", panic_message(&*panic)))),
            };
            self.stats.running.store(false, Ordering::Relaxed);
            let error = match ended {
                // Stopped.
                None => return,
                Some(Ok(())) => {
                    tracing::debug!(task = name, "background task done");
                    return;
                }
                Some(Err(e)) => e,
            };
            if self.stop.is_stopped() {
                tracing::warn!(task = name, error = format!("{error:#}"), "background task failed while stopping");
                return;
            }
            failures = self.backoff.failures_after(failures, started.elapsed());
            let delay = self.backoff.delay(failures);
            tracing::error!(
                task = name,
                error = format!("{error:#}"),
                failures,
                restart_in_ms = delay.as_millis(),
                "background task failed; restarting"
            );
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.stop.wait() => return,
            }
            self.stats.restarts.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Runs `run` to its end, or until the stage stops (then `None`).
    async fn one_run<Fut>(&self, run: Fut) -> Option<anyhow::Result<()>>
    where
        Fut: Future + Send + 'static,
        Fut::Output: Outcome,
    {
        let mut handle = AbortOnDrop(tokio::spawn(async move { run.await.into_result() }));
        tokio::select! {
            ended = &mut handle.0 => return Some(joined(ended)),
            () = self.stop.wait() => {}
        }
        if self.graceful {
            match tokio::time::timeout(self.grace, &mut handle.0).await {
                Ok(ended) => {
                    if let Err(e) = joined(ended) {
                        tracing::warn!(
                            task = self.name,
                            error = format!("{e:#}"),
                            "background task failed while stopping"
                        );
                    }
                    return None;
                }
                Err(_) => {
                    tracing::warn!(
                        task = self.name,
                        grace_ms = self.grace.as_millis(),
                        "background task did not stop in time; aborting it"
                    );
                }
            }
        }
        handle.0.abort();
        let _ = (&mut handle.0).await;
        None
    }
}

/// A run's result from its join result: a panic is an error.
fn joined(ended: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Result<()> {
    match ended {
        Ok(result) => result,
        Err(e) if e.is_panic() => Err(anyhow::anyhow!("panicked: {}", panic_message(&*e.into_panic()))),
        Err(e) => Err(anyhow::anyhow!("{e}")),
    }
}

/// The message of a panic's payload (`panic!` gives a `&str` or a `String`).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

#[cfg(test)]
mod tests {
    // Real time, in milliseconds: tokio's paused clock needs its `test-util` feature, which the
    // workspace does not enable. Sleeps never end early, so lower bounds are exact; upper bounds
    // leave room for a busy machine.
    use super::*;
    use std::sync::atomic::AtomicU32;

    const BACKOFF: Backoff = Backoff {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(10),
        healthy_after: Duration::from_secs(60),
    };

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Waits until `done` holds (at most 10 s).
    async fn until(mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "condition not reached within 10 s");
            tokio::time::sleep(ms(5)).await;
        }
    }

    fn gaps(starts: &[Instant]) -> Vec<Duration> {
        starts.windows(2).map(|w| w[1] - w[0]).collect()
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let delays: Vec<u64> = (0..=6).map(|n| BACKOFF.delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 1, 2, 4, 8, 10, 10]);
        assert_eq!(BACKOFF.delay(u32::MAX), Duration::from_secs(10));
        let unbounded = Backoff { max: Duration::MAX, ..BACKOFF };
        assert_eq!(unbounded.delay(u32::MAX), Duration::from_secs(1 << 31));
    }

    #[test]
    fn a_healthy_run_starts_the_count_over() {
        assert_eq!(BACKOFF.failures_after(0, Duration::ZERO), 1);
        assert_eq!(BACKOFF.failures_after(5, Duration::from_secs(59)), 6);
        assert_eq!(BACKOFF.failures_after(5, Duration::from_secs(60)), 1);
        assert_eq!(BACKOFF.failures_after(u32::MAX, Duration::ZERO), u32::MAX);
    }

    #[tokio::test]
    async fn a_task_that_panics_is_restarted() {
        let mut sup = Supervisor::new(Backoff { initial: ms(10), ..BACKOFF });
        let stage = sup.stage("only", ms(100));
        let runs = Arc::new(AtomicU32::new(0));
        sup.spawn(stage, "flaky", {
            let runs = runs.clone();
            move || {
                let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    if run <= 2 {
                        panic!("run {run} breaks");
                    }
                    std::future::pending::<()>().await;
                }
            }
        });
        let stats = sup.stats();
        until(|| stats.tasks()[0].running && runs.load(Ordering::SeqCst) == 3).await;
        assert_eq!(stats.tasks(), [TaskStatus { name: "flaky", restarts: 2, running: true }]);
        sup.shutdown().await;
        assert_eq!(stats.tasks(), [TaskStatus { name: "flaky", restarts: 2, running: false }]);
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    // Tokio's clock, paused: the gaps are the backoff's own, whatever else loads the machine.
    #[tokio::test(start_paused = true)]
    async fn restarts_wait_out_a_growing_capped_backoff() {
        let mut sup = Supervisor::new(Backoff { initial: ms(50), max: ms(200), ..BACKOFF });
        let stage = sup.stage("only", ms(100));
        let starts = Arc::new(Mutex::new(Vec::new()));
        sup.spawn(stage, "failing", {
            let starts = starts.clone();
            move || {
                starts.lock().unwrap().push(Instant::now());
                async { Err::<(), _>(anyhow::anyhow!("store unavailable")) }
            }
        });
        until(|| starts.lock().unwrap().len() == 6).await;
        let stats = sup.stats();
        sup.shutdown().await;
        let gaps = gaps(&starts.lock().unwrap()[..6]);
        // 50, 100, 200, then capped at 200 (400 and 800 without the cap).
        for (gap, want) in gaps.iter().zip([50, 100, 200, 200, 200]) {
            assert!(*gap >= ms(want) && *gap < ms(want) + ms(190), "{gaps:?}");
        }
        assert!(stats.tasks()[0].restarts >= 5);
    }

    // Tokio's clock, paused: the gaps are the backoff's own, whatever else loads the machine.
    #[tokio::test(start_paused = true)]
    async fn a_failure_after_a_healthy_run_restarts_at_the_initial_delay() {
        let mut sup = Supervisor::new(Backoff { initial: ms(50), max: ms(10_000), healthy_after: ms(300) });
        let stage = sup.stage("only", ms(100));
        let starts = Arc::new(Mutex::new(Vec::new()));
        sup.spawn(stage, "mostly-healthy", {
            let starts = starts.clone();
            move || {
                let run = {
                    let mut starts = starts.lock().unwrap();
                    starts.push(Instant::now());
                    starts.len()
                };
                async move {
                    // Runs 1-3 fail at once; run 4 is healthy for 400 ms, then fails.
                    if run == 4 {
                        tokio::time::sleep(ms(400)).await;
                    }
                    Err::<(), _>(anyhow::anyhow!("run {run} failed"))
                }
            }
        });
        until(|| starts.lock().unwrap().len() == 5).await;
        sup.shutdown().await;
        let gaps = gaps(&starts.lock().unwrap()[..5]);
        // 50, 100, 200; then 400 ms of run and 50 (not 400) before the next.
        for (gap, want) in gaps.iter().zip([50, 100, 200, 450]) {
            assert!(*gap >= ms(want) && *gap < ms(want) + ms(300), "{gaps:?}");
        }
    }

    #[tokio::test]
    async fn a_task_that_returns_ok_is_done() {
        let mut sup = Supervisor::new(Backoff { initial: ms(10), ..BACKOFF });
        let stage = sup.stage("only", ms(100));
        let runs = Arc::new(AtomicU32::new(0));
        sup.spawn(stage, "once", {
            let runs = runs.clone();
            move || {
                runs.fetch_add(1, Ordering::SeqCst);
                async {}
            }
        });
        tokio::time::sleep(ms(200)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(sup.stats().tasks(), [TaskStatus { name: "once", restarts: 0, running: false }]);
        sup.shutdown().await;
    }

    #[tokio::test]
    async fn shutdown_runs_the_stages_in_order_and_waits_for_each() {
        let log = Arc::new(Mutex::new(Vec::<&'static str>::new()));
        // A graceful task that, told to stop, takes `work` to finish.
        let task = |told: &'static str, done: &'static str, work: Duration| {
            let log = log.clone();
            move |stop: Stop| {
                let log = log.clone();
                async move {
                    stop.wait().await;
                    log.lock().unwrap().push(told);
                    tokio::time::sleep(work).await;
                    log.lock().unwrap().push(done);
                }
            }
        };
        let mut sup = Supervisor::new(BACKOFF);
        let ingress = sup.stage("ingress", Duration::from_secs(5));
        let serving = sup.stage("serving", Duration::from_secs(5));
        let flush = sup.stage("flush", Duration::from_secs(5));
        // Registered in another order than the stages': the stages decide.
        sup.spawn_graceful(flush, "folder", task("folder told", "folder flushed", ms(50)));
        sup.spawn_graceful(serving, "http", task("http told", "http stopped", ms(100)));
        sup.spawn(serving, "loop", std::future::pending::<()>);
        sup.spawn_graceful(ingress, "envoy", task("envoy told", "envoy drained", ms(150)));
        let stats = sup.stats();
        until(|| stats.tasks().iter().all(|t| t.running)).await;
        tokio::time::sleep(ms(20)).await;
        assert!(log.lock().unwrap().is_empty());

        let started = Instant::now();
        sup.shutdown().await;
        let took = started.elapsed();
        assert!(took >= ms(300) && took < Duration::from_secs(5), "{took:?}");
        assert_eq!(
            *log.lock().unwrap(),
            ["envoy told", "envoy drained", "http told", "http stopped", "folder told", "folder flushed"]
        );
        assert!(stats.tasks().iter().all(|t| !t.running && t.restarts == 0), "{:?}", stats.tasks());
    }

    #[tokio::test]
    async fn a_task_that_ignores_its_stop_is_aborted_after_the_grace_period() {
        struct Dropped(Arc<AtomicBool>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(AtomicBool::new(false));
        let mut sup = Supervisor::new(BACKOFF);
        let stage = sup.stage("only", ms(200));
        sup.spawn_graceful(stage, "stubborn", {
            let dropped = dropped.clone();
            move |_stop| {
                let guard = Dropped(dropped.clone());
                async move {
                    let _guard = guard;
                    std::future::pending::<()>().await;
                }
            }
        });
        let stats = sup.stats();
        until(|| stats.tasks()[0].running).await;
        let started = Instant::now();
        sup.shutdown().await;
        let took = started.elapsed();
        assert!(took >= ms(200) && took < ms(200) + ABORT_MARGIN, "{took:?}");
        assert!(dropped.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_stop_during_the_backoff_ends_the_task_without_restart() {
        let mut sup = Supervisor::new(Backoff { initial: Duration::from_secs(30), ..BACKOFF });
        let stage = sup.stage("only", ms(100));
        let runs = Arc::new(AtomicU32::new(0));
        sup.spawn(stage, "failing", {
            let runs = runs.clone();
            move || {
                runs.fetch_add(1, Ordering::SeqCst);
                async { Err::<(), _>(std::io::Error::other("refused")) }
            }
        });
        let stats = sup.stats();
        until(|| runs.load(Ordering::SeqCst) == 1 && !stats.tasks()[0].running).await;
        let started = Instant::now();
        sup.shutdown().await;
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(stats.tasks(), [TaskStatus { name: "failing", restarts: 0, running: false }]);
    }

    #[test]
    fn metrics_list_every_task() {
        let stats = Stats::default();
        stats.add("xds-server").restarts.store(3, Ordering::Relaxed);
        stats.add("usage-\"folder\"").running.store(true, Ordering::Relaxed);
        let mut registry = prometheus_client::registry::Registry::default();
        stats.register(&mut registry);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap_or_else(|e| panic!("{e}"));
        assert!(out.contains("# TYPE aqueduct_task_restarts counter\n"), "{out}");
        assert!(out.contains("aqueduct_task_restarts_total{task=\"xds-server\"} 3\n"), "{out}");
        assert!(out.contains("aqueduct_task_restarts_total{task=\"usage-\\\"folder\\\"\"} 0\n"), "{out}");
        assert!(out.contains("aqueduct_task_running{task=\"xds-server\"} 0\n"), "{out}");
        assert!(out.contains("aqueduct_task_running{task=\"usage-\\\"folder\\\"\"} 1\n"), "{out}");
    }
}
