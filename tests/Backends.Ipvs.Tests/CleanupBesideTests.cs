using Microsoft.Extensions.Logging.Abstractions;
using ProxyPlanes.Backends.Iptables;
using ProxyPlanes.Backends.Iptables.Tests;
using ProxyPlanes.Iptables;
using ProxyPlanes.Metrics;
using ProxyPlanes.Model;

namespace ProxyPlanes.Backends.Ipvs.Tests;

/// <summary>
/// Starting one mode removes what the others left, but never the running mode's own objects: the
/// iptables and IPVS modes share chain names (KUBE-SERVICES, KUBE-POSTROUTING, KUBE-MARK-MASQ,
/// KUBE-FORWARD, KUBE-PROXY-FIREWALL). The scripts run on the checking fake, which refuses what the
/// real iptables-restore refuses (a chain deleted while referenced).
/// </summary>
public sealed class CleanupBesideTests
{
    private static async Task<FakeIptables> IptablesModeNodeAsync()
    {
        var (initial, _) = await new GoldenCase("nodeport").SyncRequestsAsync();
        var fake = new FakeIptables();
        using var metrics = new ProxyMetrics();
        await new IptablesBackend(fake, metrics, NullLogger.Instance).SyncAsync(initial, default);
        return fake;
    }

    private static Dictionary<(IpFamily, string), string> Saves(FakeIptables fake) =>
        new() { [(IpFamily.IPv4, "nat")] = fake.Save("nat"), [(IpFamily.IPv4, "filter")] = fake.Save("filter") };

    [Fact]
    public async Task IpvsLeftoversBesideIptablesMode_NothingOfTheIptablesModeIsTouched()
    {
        var fake = await IptablesModeNodeAsync();
        var before = fake.Dump();
        Assert.Contains(":KUBE-SVC-", before); // positive control: the node holds iptables-mode rules

        var beside = IpvsBackend.PlanCleanup(new IpvsKernelView(), Saves(fake), new IpvsPlannerOptions(), IptablesBackend.Owns);
        var alone = IpvsBackend.PlanCleanup(new IpvsKernelView(), Saves(fake), new IpvsPlannerOptions());

        Assert.Empty(beside.OfType<IptablesRestore>());
        // Without the running mode to spare, the IPVS cleanup takes the shared chains (what it did
        // before, and what `proxyplanes cleanup --mode=ipvs` still does on purpose).
        var script = Assert.Single(alone.OfType<IptablesRestore>()).Script;
        Assert.Contains("-X KUBE-SERVICES", script);
        Assert.Equal(before, fake.Dump());
    }

    [Fact]
    public async Task IpvsLeftoversBesideIptablesMode_IpvsOnlyChainsAndTheirJumpsGo_SharedChainsStay()
    {
        var fake = await IptablesModeNodeAsync();
        // What an IPVS-mode run left: its own chains, with jumps from a chain both modes use.
        fake.Restore("""
            *nat
            :KUBE-NODE-PORT - [0:0]
            :KUBE-LOAD-BALANCER - [0:0]
            -A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT
            -A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ
            COMMIT
            *filter
            :KUBE-IPVS-FILTER - [0:0]
            -A INPUT -j KUBE-IPVS-FILTER
            COMMIT

            """);
        var withLeftovers = fake.Dump();

        var operations = IpvsBackend.PlanCleanup(new IpvsKernelView(), Saves(fake), new IpvsPlannerOptions(), IptablesBackend.Owns);
        fake.Restore(Assert.Single(operations.OfType<IptablesRestore>()).Script);

        var after = fake.Dump();
        foreach (var gone in new[] { ":KUBE-NODE-PORT", ":KUBE-LOAD-BALANCER", ":KUBE-IPVS-FILTER", "-j KUBE-NODE-PORT", "-j KUBE-IPVS-FILTER" })
        {
            Assert.Contains(gone, withLeftovers);
            Assert.DoesNotContain(gone, after);
        }
        // Everything else is exactly what the iptables mode wrote.
        Assert.Equal((await IptablesModeNodeAsync()).Dump(), after);
    }

    [Fact]
    public async Task IptablesLeftoversBesideIpvsMode_SharedChainsStay_PerServiceChainsGo()
    {
        var fake = await IptablesModeNodeAsync();
        var script = new System.Text.StringBuilder();
        IptablesBackend.AppendCleanup(script, "nat", fake.Save("nat"), IpvsNames.Owns);
        fake.Restore(script.ToString());

        var nat = fake.Save("nat");
        Assert.DoesNotContain(":KUBE-SVC-", nat);
        Assert.DoesNotContain(":KUBE-NODEPORTS", nat);
        foreach (var shared in new[] { ":KUBE-SERVICES", ":KUBE-POSTROUTING", ":KUBE-MARK-MASQ" })
            Assert.Contains(shared, nat);
    }
}
