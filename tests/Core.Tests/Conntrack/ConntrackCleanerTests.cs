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
        Assert.Equal(2, cleaner.FlowsDeleted);
        Assert.Equal(0, cleaner.Failures);
    }

    [Fact]
    public async Task CleanAsync_TwoFamilies_ReportsEachFamilysDeletedFlows()
    {
        var dual = Port(Dns, ["10.96.0.10", "fd00:96::10"], ["10.244.1.2:8053", "10.244.1.3:8053", "[fd00:244::2]:8053", "[fd00:244::3]:8053"]);
        var shrunk = Port(Dns, ["10.96.0.10", "fd00:96::10"], ["10.244.1.3:8053", "[fd00:244::3]:8053"]);
        var conntrack = new RecordingConntrack { FlowsPerDeletion = 3 };
        var reports = new List<(IpFamily Family, long Deleted)>();
        var cleaner = new ConntrackCleaner(conntrack, NullLogger.Instance, (family, _, deleted) => reports.Add((family, deleted)));

        await cleaner.CleanAsync(State(dual), State(shrunk), CancellationToken.None);

        Assert.Equal([(IpFamily.IPv4, 3L), (IpFamily.IPv6, 3L)], reports);
        Assert.Equal(2, conntrack.Calls.Count); // one tool run per family
        Assert.All(conntrack.Calls, call => Assert.Single(call.Select(d => d.Family).Distinct()));
        Assert.Equal(6, cleaner.FlowsDeleted);
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

        var reports = new List<long>();
        var cleaner2 = new ConntrackCleaner(conntrack, NullLogger.Instance, (_, _, deleted) => reports.Add(deleted));

        await cleaner.CleanAsync(Before, After, CancellationToken.None);
        await cleaner.CleanAsync(Before, After, CancellationToken.None);
        await cleaner2.CleanAsync(Before, After, CancellationToken.None);

        Assert.Equal(2, cleaner.Failures);
        Assert.Equal([0L], reports); // the attempt is still timed and reported, with nothing deleted
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

        public Task<long> DeleteAsync(IReadOnlyList<ConntrackDeletion> deletions, CancellationToken cancellationToken)
        {
            cancellationToken.ThrowIfCancellationRequested();
            Calls.Add(deletions);
            return Failure is null ? Task.FromResult(FlowsPerDeletion * deletions.Count) : Task.FromException<long>(Failure);
        }

        public long FlowsPerDeletion { get; init; } = 2;
    }
}
