using System.Net;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;
using ProxyPlanes.NodeTools;
using ProxyPlanes.NodeTools.Conntrack;
using static ProxyPlanes.Core.Tests.Conntrack.ConntrackTestStates;

namespace ProxyPlanes.Core.Tests.Conntrack;

public sealed class ConntrackCommandTests
{
    private static readonly ServicePortName Dns = Name("dns");

    [Fact]
    public void Arguments_EndpointDeletion_MatchesFrontendAndReplySource()
    {
        var deletion = new ConntrackDeletion(Dns, ConntrackDeletionReason.EndpointRemoved, Protocol.UDP, IpFamily.IPv4,
            IPAddress.Parse("10.96.0.10"), 53, IPAddress.Parse("10.244.1.2"), 8053);

        Assert.Equal(
            ["-D", "-p", "udp", "--orig-dst", "10.96.0.10", "--orig-port-dst", "53", "--reply-src", "10.244.1.2", "--reply-port-src", "8053"],
            ConntrackCommand.Arguments(deletion));
    }

    [Fact]
    public void Arguments_Ipv6NodePort_UsesFamilyAndPortOnly()
    {
        var deletion = new ConntrackDeletion(Dns, ConntrackDeletionReason.FrontendRemoved, Protocol.SCTP, IpFamily.IPv6, null, 30053);

        Assert.Equal(["-D", "-f", "ipv6", "-p", "sctp", "--orig-port-dst", "30053"], ConntrackCommand.Arguments(deletion));
    }

    [Fact]
    public void Arguments_FamilyMismatch_Throws()
    {
        var deletion = new ConntrackDeletion(Dns, ConntrackDeletionReason.EndpointRemoved, Protocol.UDP, IpFamily.IPv4,
            IPAddress.Parse("10.96.0.10"), 53, IPAddress.Parse("fd00::2"), 8053);

        Assert.Throws<ArgumentException>(() => ConntrackCommand.Arguments(deletion));
    }

    [Fact]
    public async Task DeleteAsync_ToolReportsZeroDeleted_Succeeds()
    {
        var command = FakeTool("echo 'conntrack v1.4.7 (conntrack-tools): 0 flow entries have been deleted.' >&2; exit 1");

        Assert.Equal(0, await command.DeleteAsync([Deletion(53)], CancellationToken.None));
    }

    [Fact]
    public async Task DeleteAsync_ToolReportsDeletions_ReturnsTheirSum()
    {
        var command = FakeTool("echo 'conntrack v1.4.7 (conntrack-tools): 3 flow entries have been deleted.' >&2; exit 0");

        Assert.Equal(6, await command.DeleteAsync([Deletion(53), Deletion(54)], CancellationToken.None));
    }

    [Fact]
    public async Task DeleteAsync_ToolFails_ThrowsNamingTheCommandAfterTryingTheRest()
    {
        var log = Path.Combine(Path.GetTempPath(), $"pp-conntrack-test-{Guid.NewGuid():N}");
        try
        {
            var command = FakeTool($"echo \"$*\" >> {log}; echo 'conntrack v1.4.7 (conntrack-tools): Operation failed: invalid parameters' >&2; exit 1");

            var thrown = await Assert.ThrowsAsync<AggregateException>(() => command.DeleteAsync([Deletion(53), Deletion(54)], CancellationToken.None));

            Assert.Equal(2, thrown.InnerExceptions.Count);
            var first = Assert.IsType<CommandException>(thrown.InnerExceptions[0]);
            Assert.Contains("-D -p udp --orig-dst 10.96.0.10 --orig-port-dst 53", first.Message, StringComparison.Ordinal);
            Assert.Contains("invalid parameters", first.Message, StringComparison.Ordinal);
            Assert.Equal(2, File.ReadAllLines(log).Length);
        }
        finally
        {
            File.Delete(log);
        }
    }

    [Fact]
    public async Task DeleteAsync_OneFailure_ThrowsCommandException()
    {
        var command = FakeTool("echo 'something else' >&2; exit 2");

        var thrown = await Assert.ThrowsAsync<CommandException>(() => command.DeleteAsync([Deletion(53)], CancellationToken.None));

        Assert.Contains("--orig-port-dst 53", thrown.Message, StringComparison.Ordinal);
        Assert.Equal(2, thrown.Result?.ExitCode);
    }

    [Fact]
    public async Task DeleteAsync_ToolMissing_ThrowsNamingTheCommand()
    {
        var command = new ConntrackCommand("/nonexistent/conntrack");

        var thrown = await Assert.ThrowsAsync<CommandException>(() => command.DeleteAsync([Deletion(53), Deletion(54)], CancellationToken.None));

        Assert.Contains("/nonexistent/conntrack -D", thrown.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task DeleteAsync_Nothing_RunsNothing()
    {
        await new ConntrackCommand("/nonexistent/conntrack").DeleteAsync([], CancellationToken.None);
    }

    /// <summary>A conntrack stand-in: the prefix runs <c>sh -c SCRIPT conntrack ARGS...</c>.</summary>
    private static ConntrackCommand FakeTool(string script) => new("conntrack", ["sh", "-c", script]);

    private static ConntrackDeletion Deletion(int port) =>
        new(Dns, ConntrackDeletionReason.FrontendRemoved, Protocol.UDP, IpFamily.IPv4, IPAddress.Parse("10.96.0.10"), port);
}
