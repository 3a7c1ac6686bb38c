using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Iptables;
using ProxyPlanes.Model;
using ProxyPlanes.NodeTools;

namespace ProxyPlanes.Backends.Iptables.Tests;

/// <summary>The checking fake's own behaviour (FakeIptablesKernelTests compares its refusals with the real iptables-restore).</summary>
public sealed class FakeIptablesTests
{
    public static IEnumerable<object[]> Cases() => GoldenCase.All();

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task Save_AfterGoldenFullSync_RoundTripsThroughTheParser(string caseName)
    {
        var (initial, _) = await new GoldenCase(caseName).SyncRequestsAsync();
        var fake = new FakeIptables();
        fake.Restore(new IptablesPlanner(IpFamily.IPv4).Plan(initial, null, KernelTables.Empty).ToString());
        var save = fake.Save("nat") + fake.Save("filter");

        var tables = IptablesSave.ParseTables(save);
        Assert.Contains(tables.Single(t => t.Name == "nat").Rules["KUBE-SERVICES"], r => r.EndsWith("-j KUBE-NODEPORTS", StringComparison.Ordinal));

        // The save restored (without --noflush) into another fake gives the same tables.
        var copy = new FakeIptables();
        copy.Restore(save, noflush: false);
        Assert.Equal(save, copy.Save("nat") + copy.Save("filter"));
    }

    [Fact]
    public void Restore_RefusedLine_LeavesTheTableAndCommitsEarlierTables()
    {
        var fake = new FakeIptables();
        fake.Restore("*filter\n:KUBE-A - [0:0]\n-A KUBE-A -j DROP\nCOMMIT\n");

        var e = Assert.Throws<CommandException>(() =>
            fake.Restore("*nat\n:KUBE-N - [0:0]\nCOMMIT\n*filter\n:KUBE-A - [0:0]\n-A KUBE-A -j KUBE-MISSING\nCOMMIT\n"));

        Assert.Contains("line 6 failed", e.Message);
        Assert.Contains("-A KUBE-A -j DROP", fake.Save("filter"));
        Assert.Contains(":KUBE-N - [0:0]", fake.Save("nat"));
    }

    [Theory]
    [InlineData("*filter\n:KUBE-A - [0:0]\n:KUBE-B - [0:0]\n-A KUBE-A -j KUBE-B\n-X KUBE-B\nCOMMIT\n", "Too many links")]
    [InlineData("*filter\n:KUBE-A - [0:0]\n-A KUBE-A -j DROP\n-X KUBE-A\nCOMMIT\n", "Directory not empty")]
    [InlineData("*filter\n-D INPUT -j DROP\nCOMMIT\n", "Bad rule")]
    [InlineData("*filter\n-A KUBE-NOPE -j DROP\nCOMMIT\n", "does not exist")]
    [InlineData("*filter\n:KUBE-A - [0:0]\n-A KUBE-A -j DNAT --to-destination 10.0.0.1\nCOMMIT\n", "only valid in the nat table")]
    [InlineData("*filter\n:KUBE-A - [0:0]\n", "COMMIT expected")]
    public void Restore_WhatTheKernelRefuses_IsRefused(string script, string reason)
    {
        var fake = new FakeIptables();

        var e = Assert.Throws<CommandException>(() => fake.Restore(script));

        Assert.Contains(reason, e.Message);
        Assert.Equal(new FakeIptables().Dump(), fake.Dump());
    }
}
