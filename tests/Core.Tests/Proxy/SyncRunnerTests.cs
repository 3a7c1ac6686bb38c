using System.Collections.Concurrent;
using System.Threading.Channels;
using Microsoft.Extensions.Logging.Abstractions;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;

namespace ProxyPlanes.Core.Tests.Proxy;

public class SyncRunnerTests
{
    /// <summary>
    /// How long a real-time test waits for a sync that must come. Generous (CI runs the test assemblies side by side on
    /// two cores; a 5 s deadline timed out there once with the sync arriving just after it), yet shorter than the
    /// real-time options' sync period, so a periodic sync can never stand in for a lost trigger.
    /// </summary>
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(20);
    private static readonly DateTimeOffset Start = new(2024, 1, 1, 0, 0, 0, TimeSpan.Zero);

    private static readonly SyncRunnerOptions RealTimeOptions = new()
    {
        MinSyncPeriod = TimeSpan.FromMilliseconds(200),
        SyncPeriod = TimeSpan.FromMinutes(1), // longer than Deadline: see there
        RetryDelay = TimeSpan.FromMilliseconds(50),
        MaxRetryDelay = TimeSpan.FromMilliseconds(200),
    };

    /// <summary>Records each sync's decision; fails the calls <see cref="FailOn"/> picks (1-based).</summary>
    private sealed class Recorder
    {
        private readonly Channel<SyncDecision> _channel = Channel.CreateUnbounded<SyncDecision>();
        private int _count;

        public ConcurrentQueue<SyncDecision> Decisions { get; } = new();
        public bool[] Calls => Decisions.Select(d => d.Full).ToArray();
        public Func<int, bool> FailOn { get; init; } = _ => false;

        /// <summary>Runs inside sync n (1-based), e.g. to move a manual clock while the sync "takes time".</summary>
        public Action<int>? During { get; init; }

        public int Count => Decisions.Count;

        public Task<bool> Sync(SyncDecision decision, CancellationToken cancellationToken)
        {
            var n = Interlocked.Increment(ref _count);
            During?.Invoke(n);
            Decisions.Enqueue(decision);
            _channel.Writer.TryWrite(decision);
            return FailOn(n) ? Task.FromException<bool>(new InvalidOperationException($"sync {n} failed")) : Task.FromResult(decision.Full);
        }

        /// <summary>Whether the next sync is full; fails the test if none comes within the deadline.</summary>
        public async Task<bool> NextAsync(TimeSpan? timeout = null) => (await NextDecisionAsync(timeout)).Full;

        /// <summary>The next sync's decision; fails the test if none comes within the deadline.</summary>
        public async Task<SyncDecision> NextDecisionAsync(TimeSpan? timeout = null)
        {
            using var cts = new CancellationTokenSource(timeout ?? Deadline);
            try
            {
                return await _channel.Reader.ReadAsync(cts.Token);
            }
            catch (OperationCanceledException)
            {
                throw new TimeoutException($"no sync within {timeout ?? Deadline} (after {Count} syncs)");
            }
        }
    }

    private sealed class Harness : IAsyncDisposable
    {
        private readonly CancellationTokenSource _cts = new();

        public Harness(Recorder recorder, SyncRunnerOptions options, TimeProvider? time = null, Func<int>? endpointCount = null)
        {
            Runner = new SyncRunner(recorder.Sync, options, time ?? TimeProvider.System, NullLogger.Instance) { EndpointCount = endpointCount };
            Run = Task.Run(() => Runner.RunAsync(_cts.Token));
        }

        public SyncRunner Runner { get; }
        public Task Run { get; }

        public async ValueTask DisposeAsync()
        {
            await _cts.CancelAsync();
            await Run.WaitAsync(Deadline);
            _cts.Dispose();
        }
    }

    private static async Task EventuallyAsync(Func<bool> condition, string what)
    {
        var deadline = DateTime.UtcNow + Deadline;
        while (!condition())
        {
            if (DateTime.UtcNow > deadline) throw new TimeoutException(what);
            await Task.Delay(5);
        }
    }

    [Fact]
    public async Task RunAsync_NoTrigger_NoSync()
    {
        var recorder = new Recorder();
        await using (new Harness(recorder, RealTimeOptions))
        {
            await Task.Delay(100);
        }

        Assert.Equal(0, recorder.Count);
    }

    [Fact]
    public async Task Trigger_FirstSync_IsFull()
    {
        var recorder = new Recorder();
        await using var harness = new Harness(recorder, RealTimeOptions);

        harness.Runner.Trigger();

        Assert.True(await recorder.NextAsync());
    }

    [Fact]
    public async Task Trigger_TwentyQuickTriggers_CoalescedIntoAtMostTwoSyncs()
    {
        var recorder = new Recorder();
        await using var harness = new Harness(recorder, RealTimeOptions);

        for (var i = 0; i < 20; i++) harness.Runner.Trigger();

        Assert.True(await recorder.NextAsync());
        // Anything left over runs once, after the minimum interval; then nothing more is pending.
        await Task.Delay(RealTimeOptions.MinSyncPeriod * 3);
        Assert.InRange(recorder.Count, 1, 2);
        var calls = recorder.Calls;
        Assert.True(calls[0]);
        if (calls.Length == 2) Assert.False(calls[1]);
    }

    [Fact]
    public async Task Trigger_AfterSuccessfulSync_NextSyncIsPartial()
    {
        var recorder = new Recorder();
        await using var harness = new Harness(recorder, RealTimeOptions);

        harness.Runner.Trigger();
        Assert.True(await recorder.NextAsync());
        harness.Runner.Trigger();

        Assert.False(await recorder.NextAsync());
        Assert.Equal(0, harness.Runner.ConsecutiveFailures);
    }

    [Fact]
    public async Task RunAsync_SyncFails_RetriedAsFullSyncWithoutNewTrigger()
    {
        var recorder = new Recorder { FailOn = n => n == 2 };
        await using var harness = new Harness(recorder, RealTimeOptions);

        harness.Runner.Trigger();
        Assert.True(await recorder.NextAsync());
        harness.Runner.Trigger();
        Assert.False(await recorder.NextAsync()); // this partial sync fails
        await EventuallyAsync(() => harness.Runner.ConsecutiveFailures == 1 || recorder.Count > 2, "failure counted");

        Assert.True(await recorder.NextAsync()); // the retry, unprompted, is full
        await EventuallyAsync(() => harness.Runner.ConsecutiveFailures == 0, "failure count reset after success");

        harness.Runner.Trigger();
        Assert.False(await recorder.NextAsync()); // back to partial after a success
    }

    [Fact]
    public async Task RunAsync_FirstSyncFails_RetriedUntilSuccess()
    {
        var recorder = new Recorder { FailOn = n => n <= 2 };
        await using var harness = new Harness(recorder, RealTimeOptions);

        harness.Runner.Trigger();

        Assert.True(await recorder.NextAsync());
        Assert.True(await recorder.NextAsync());
        Assert.True(await recorder.NextAsync());
        await EventuallyAsync(() => harness.Runner.ConsecutiveFailures == 0, "failure count reset after success");
    }

    [Fact]
    public async Task RunAsync_Cancelled_ReturnsPromptly()
    {
        var recorder = new Recorder();
        using var cts = new CancellationTokenSource();
        var runner = new SyncRunner(recorder.Sync, RealTimeOptions, TimeProvider.System, NullLogger.Instance);
        var run = Task.Run(() => runner.RunAsync(cts.Token));
        runner.Trigger();
        await recorder.NextAsync();

        await cts.CancelAsync();

        await run.WaitAsync(TimeSpan.FromSeconds(2));
        Assert.True(run.IsCompletedSuccessfully);
    }

    [Fact]
    public async Task RunAsync_CancelledDuringSync_ReturnsWithoutRetrying()
    {
        using var cts = new CancellationTokenSource();
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var calls = 0;
        var runner = new SyncRunner(
            async (_, ct) =>
            {
                Interlocked.Increment(ref calls);
                started.TrySetResult();
                await Task.Delay(Timeout.Infinite, ct);
                return true;
            },
            RealTimeOptions, TimeProvider.System, NullLogger.Instance);
        var run = Task.Run(() => runner.RunAsync(cts.Token));
        runner.Trigger();
        await started.Task.WaitAsync(Deadline);

        await cts.CancelAsync();

        await run.WaitAsync(TimeSpan.FromSeconds(2));
        Assert.Equal(1, calls);
        Assert.Equal(0, runner.ConsecutiveFailures);
    }

    // The tests below drive a manual clock, so schedules are checked exactly.

    private static readonly SyncRunnerOptions ManualOptions = new()
    {
        MinSyncPeriod = TimeSpan.FromSeconds(1),
        SyncPeriod = TimeSpan.FromHours(1),
        RetryDelay = TimeSpan.FromSeconds(1),
        MaxRetryDelay = TimeSpan.FromSeconds(4),
    };

    [Fact]
    public async Task Trigger_WithinMinSyncPeriod_WaitsUntilIntervalElapsed()
    {
        var time = new ManualTimeProvider(Start);
        var recorder = new Recorder();
        await using var harness = new Harness(recorder, ManualOptions, time);
        harness.Runner.Trigger();
        Assert.True(await recorder.NextAsync());
        await time.WaitForTimerAsync(Start + ManualOptions.SyncPeriod, Deadline);

        time.Advance(TimeSpan.FromMilliseconds(300));
        harness.Runner.Trigger();
        await time.WaitForTimerAsync(Start + ManualOptions.MinSyncPeriod, Deadline);
        time.Advance(TimeSpan.FromMilliseconds(699));
        await Task.Delay(50);
        Assert.Equal(1, recorder.Count);

        time.Advance(TimeSpan.FromMilliseconds(1));

        Assert.False(await recorder.NextAsync());
    }

    [Fact]
    public async Task Trigger_OverdueByExactlyOneMillisecond_SyncsImmediately()
    {
        // 'due - now' of exactly -1 ms equals Timeout.InfiniteTimeSpan; it must not be read as "wait forever".
        var time = new ManualTimeProvider(Start);
        var recorder = new Recorder();
        await using var harness = new Harness(recorder, ManualOptions, time);
        harness.Runner.Trigger();
        Assert.True(await recorder.NextAsync());
        await time.WaitForTimerAsync(Start + ManualOptions.SyncPeriod, Deadline);

        time.Advance(ManualOptions.MinSyncPeriod + TimeSpan.FromMilliseconds(1));
        harness.Runner.Trigger();

        Assert.False(await recorder.NextAsync(TimeSpan.FromSeconds(3)));
    }

    // kube-proxy's sync semantics: --sync-period brings a partial sync with a canary check; a full
    // sync runs at start, after a failure, and hourly on small clusters only.

    private static readonly SyncRunnerOptions PeriodicOptions = new()
    {
        MinSyncPeriod = TimeSpan.FromSeconds(1),
        SyncPeriod = TimeSpan.FromMinutes(10),
        FullSyncPeriod = TimeSpan.FromHours(1),
        RetryDelay = TimeSpan.FromSeconds(1),
        MaxRetryDelay = TimeSpan.FromSeconds(4),
    };

    /// <summary>Lets the runner arm its periodic timer, moves the clock to it, and returns that sync's decision.</summary>
    private static async Task<SyncDecision> NextPeriodicAsync(ManualTimeProvider time, Recorder recorder, DateTimeOffset due)
    {
        await time.WaitForTimerAsync(due, Deadline);
        time.Advance(due - time.GetUtcNow());
        return await recorder.NextDecisionAsync();
    }

    [Fact]
    public async Task RunAsync_SyncPeriodElapsed_PartialSyncThatChecksTheCanary()
    {
        var time = new ManualTimeProvider(Start);
        var recorder = new Recorder();
        await using var harness = new Harness(recorder, PeriodicOptions, time);
        harness.Runner.Trigger();
        Assert.Equal(new SyncDecision(FullSyncReason.Start, CheckCanary: false), await recorder.NextDecisionAsync());

        var periodic = await NextPeriodicAsync(time, recorder, Start + PeriodicOptions.SyncPeriod);

        Assert.Equal(new SyncDecision(null, CheckCanary: true), periodic);
        // And again one period after that sync, with no change in between.
        Assert.Equal(new SyncDecision(null, CheckCanary: true), await NextPeriodicAsync(time, recorder, Start + 2 * PeriodicOptions.SyncPeriod));
    }

    [Fact]
    public async Task Trigger_ChangeWithinSyncPeriod_PartialWithoutCanaryCheck()
    {
        var time = new ManualTimeProvider(Start);
        var recorder = new Recorder();
        await using var harness = new Harness(recorder, PeriodicOptions, time);
        harness.Runner.Trigger();
        await recorder.NextDecisionAsync();
        await time.WaitForTimerAsync(Start + PeriodicOptions.SyncPeriod, Deadline);

        time.Advance(TimeSpan.FromMinutes(1));
        harness.Runner.Trigger();

        Assert.Equal(SyncDecision.Partial, await recorder.NextDecisionAsync());
    }

    [Fact]
    public async Task RunAsync_SmallCluster_FullSyncOnceAnHour()
    {
        var time = new ManualTimeProvider(Start);
        var recorder = new Recorder();
        await using var harness = new Harness(recorder, PeriodicOptions, time, endpointCount: () => 1000);
        harness.Runner.Trigger();
        Assert.True(await recorder.NextAsync());

        var decisions = new List<SyncDecision>();
        for (var i = 1; i <= 7; i++) decisions.Add(await NextPeriodicAsync(time, recorder, Start + i * PeriodicOptions.SyncPeriod));

        // Five periodic partial syncs, then the hourly full one (60 minutes after the first), then partial again.
        Assert.All(decisions.Take(5), d => Assert.Equal(new SyncDecision(null, true), d));
        Assert.Equal(new SyncDecision(FullSyncReason.Hourly, true), decisions[5]);
        Assert.Equal(new SyncDecision(null, true), decisions[6]);
    }

    [Fact]
    public async Task RunAsync_MoreThanAThousandEndpoints_NoPeriodicFullSync()
    {
        var time = new ManualTimeProvider(Start);
        var recorder = new Recorder();
        await using var harness = new Harness(recorder, PeriodicOptions, time, endpointCount: () => 1001);
        harness.Runner.Trigger();
        Assert.True(await recorder.NextAsync());

        // Three hours of periodic syncs: none is full.
        for (var i = 1; i <= 18; i++)
            Assert.Equal(new SyncDecision(null, true), await NextPeriodicAsync(time, recorder, Start + i * PeriodicOptions.SyncPeriod));
    }

    [Fact]
    public async Task RunAsync_PeriodicSyncFails_RetryIsFullForFailure()
    {
        var time = new ManualTimeProvider(Start);
        var recorder = new Recorder { FailOn = n => n == 2 };
        await using var harness = new Harness(recorder, PeriodicOptions, time);
        harness.Runner.Trigger();
        await recorder.NextDecisionAsync();
        Assert.False((await NextPeriodicAsync(time, recorder, Start + PeriodicOptions.SyncPeriod)).Full); // fails

        var retry = await NextPeriodicAsync(time, recorder, Start + PeriodicOptions.SyncPeriod + PeriodicOptions.RetryDelay);

        Assert.Equal(FullSyncReason.Failure, retry.FullReason);
        // After the successful retry, periodic syncs are partial again.
        var after = Start + PeriodicOptions.SyncPeriod + PeriodicOptions.RetryDelay;
        Assert.Equal(new SyncDecision(null, true), await NextPeriodicAsync(time, recorder, after + PeriodicOptions.SyncPeriod));
    }

    [Fact]
    public async Task RunAsync_FullSyncLongerThanSyncPeriod_NotFollowedByAnotherFullSync()
    {
        var time = new ManualTimeProvider(Start);
        SyncRunner? runner = null;
        // The first (full) sync takes three sync periods; a change arrives while it runs.
        var recorder = new Recorder
        {
            During = n =>
            {
                if (n != 1) return;
                time.Advance(3 * PeriodicOptions.SyncPeriod);
                runner!.Trigger();
            },
        };
        await using var harness = new Harness(recorder, PeriodicOptions, time);
        runner = harness.Runner;
        harness.Runner.Trigger();
        Assert.True(await recorder.NextAsync());

        // The change is not starved: it runs at once, as a partial sync.
        var change = await recorder.NextDecisionAsync();
        Assert.False(change.Full);

        // The next periodic sync counts from the end of the last sync, and is partial too.
        var periodic = await NextPeriodicAsync(time, recorder, Start + 4 * PeriodicOptions.SyncPeriod);
        Assert.Equal(new SyncDecision(null, true), periodic);
        Assert.Equal(1, recorder.Calls.Count(full => full));
    }

    [Fact]
    public async Task RunAsync_RepeatedFailures_BackoffDoublesUpToMax()
    {
        var time = new ManualTimeProvider(Start);
        var recorder = new Recorder { FailOn = _ => true };
        await using var harness = new Harness(recorder, ManualOptions, time);
        harness.Runner.Trigger();
        Assert.True(await recorder.NextAsync());

        var at = Start;
        foreach (var seconds in new[] { 1, 2, 4, 4 })
        {
            at += TimeSpan.FromSeconds(seconds);
            await time.WaitForTimerAsync(at, Deadline);
            time.Advance(TimeSpan.FromSeconds(seconds));
            Assert.True(await recorder.NextAsync()); // every retry is full
        }
        await EventuallyAsync(() => harness.Runner.ConsecutiveFailures == 5, "five failures counted");
    }
}
