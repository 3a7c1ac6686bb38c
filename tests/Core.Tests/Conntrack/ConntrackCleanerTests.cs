using Microsoft.Extensions.Logging.Abstractions;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;
using ProxyPlanes.NodeTools.Conntrack;
using static ProxyPlanes.Core.Tests.Conntrack.ConntrackTestStates;

namespace ProxyPlanes.Core.Tests.Conntrack;

public sealed class ConntrackCleanerTests
{
    private static readonly ServicePortName Dns = Name("dns");
    private static readonly DesiredState Before = State(Port(Dns, ["10.96.0.10"], ["10.244.1.2:8053", "10.244.1.3:8053"]));
    private static readonly DesiredState After = State(Port(Dns, ["10.96.0.10"], ["10.244.1.3:8053"]));

    [Fact]
    public async Task CleanAsync_StaleEndpoint_AppliesThePlan()
    {
        var conntrack = new RecordingConntrack();
        var cleaner = new ConntrackCleaner(conntrack, NullLogger.Instance);

        await cleaner.CleanAsync(Before, After, CancellationToken.None);

        Assert.Equal(StaleConntrackPlanner.Plan(Before, After), Assert.Single(conntrack.Calls));
        Assert.Equal(1, cleaner.Deletions);
        Assert.Equal(0, cleaner.Failures);
    }

    [Fact]
    public async Task CleanAsync_NothingStale_DoesNotCallTheTool()
    {
        var conntrack = new RecordingConntrack();
        var cleaner = new ConntrackCleaner(conntrack, NullLogger.Instance);

        await cleaner.CleanAsync(After, After, CancellationToken.None);

        Assert.Empty(conntrack.Calls);
    }

    [Fact]
    public async Task CleanAsync_ToolFails_LogsAndCountsWithoutThrowing()
    {
        var conntrack = new RecordingConntrack { Failure = new InvalidOperationException("boom") };
        var cleaner = new ConntrackCleaner(conntrack, NullLogger.Instance);

        await cleaner.CleanAsync(Before, After, CancellationToken.None);
        await cleaner.CleanAsync(Before, After, CancellationToken.None);

        Assert.Equal(2, cleaner.Failures);
    }

    [Fact]
    public async Task CleanAsync_Cancelled_Throws()
    {
        using var cts = new CancellationTokenSource();
        await cts.CancelAsync();
        var conntrack = new RecordingConntrack();
        var cleaner = new ConntrackCleaner(conntrack, NullLogger.Instance);

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => cleaner.CleanAsync(Before, After, cts.Token));
        Assert.Equal(0, cleaner.Failures);
    }

    private sealed class RecordingConntrack : IConntrack
    {
        public List<IReadOnlyList<ConntrackDeletion>> Calls { get; } = [];

        public Exception? Failure { get; init; }

        public Task DeleteAsync(IReadOnlyList<ConntrackDeletion> deletions, CancellationToken cancellationToken)
        {
            cancellationToken.ThrowIfCancellationRequested();
            Calls.Add(deletions);
            return Failure is null ? Task.CompletedTask : Task.FromException(Failure);
        }
    }
}
