using ProxyPlanes.Model;
using ProxyPlanes.Netlink;

namespace ProxyPlanes.Backends.Nftables.Tests;

/// <summary>The rule compiler makes the expressions every port's rules have in common once (NftNetlinkEncoding.SharedExpressions).</summary>
public sealed class NftRuleExpressionSharingTests
{
    private static List<NfTablesExpression> Compile(string text, IpFamily family = IpFamily.IPv4) =>
        NftNetlinkEncoding.Rule(family, text, out var reason) ?? throw new InvalidOperationException(reason);

    private static string Text(List<NfTablesExpression> expressions) => string.Join(" ", expressions);

    [Fact]
    public void TwoPortsRules_ShareTheCommonExpressions_NotTheClusterIPOrThePoolOffset()
    {
        var a = Compile("ip daddr 10.96.0.10 tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade");
        var b = Compile("ip daddr 10.96.0.11 tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade");

        Assert.Equal(a.Count, b.Count);
        // payload daddr, cmp VIP, meta l4proto, cmp tcp, payload dport, cmp 80, payload saddr (2 bytes), cmp != 10.244, jump
        Assert.Equal(9, a.Count);
        Assert.NotSame(a[1], b[1]);
        Assert.Equal("[ cmp eq reg 1 0x0A60000A ]", a[1].ToString());
        Assert.Equal("[ cmp eq reg 1 0x0A60000B ]", b[1].ToString());
        foreach (var i in new[] { 0, 2, 3, 4, 5, 6, 7, 8 }) Assert.Same(a[i], b[i]);

        var slotsA = Compile("meta l4proto tcp dnat ip to numgen random mod 4096 offset 4096 map @endpoint-slots-tcp-01");
        var slotsB = Compile("meta l4proto tcp dnat ip to numgen random mod 4096 offset 8192 map @endpoint-slots-tcp-01");
        Assert.NotSame(slotsA[2], slotsB[2]);
        Assert.Contains("offset 8192", slotsB[2].ToString());
        foreach (var i in new[] { 0, 1, 3, 4, 5 }) Assert.Same(slotsA[i], slotsB[i]);
    }

    [Fact]
    public void OnePortsChainsAndSets_AreNotShared()
    {
        var a = Compile("ip saddr != @source-ranges-ABCDEFGH-ns/web/tcp/http drop");
        var b = Compile("ip saddr != @source-ranges-ABCDEFGH-ns/web/tcp/http drop");
        Assert.NotSame(a[1], b[1]);
        Assert.Same(a[2], b[2]); // drop
        var goto1 = Compile("goto service-ABCDEFGH-ns/web/tcp/http");
        var goto2 = Compile("goto service-ABCDEFGH-ns/web/tcp/http");
        Assert.NotSame(goto1[0], goto2[0]);
    }

    [Theory]
    // Each pair differs in one thing the shared expression's key must hold.
    [InlineData("ip saddr @hairpin drop", "ip saddr != @hairpin drop")]
    [InlineData("ip daddr . meta l4proto . th dport vmap @service-ips", "ip daddr . meta l4proto . th dport @service-ips drop")]
    [InlineData("tcp dport 80 accept", "tcp dport 81 accept")]
    [InlineData("tcp dport 80 accept", "udp dport 80 accept")]
    [InlineData("tcp dport 80 accept", "sctp dport 80 accept")]
    [InlineData("jump mark-for-masquerade", "goto mark-for-masquerade")]
    [InlineData("jump mark-for-masquerade", "jump masquerading")]
    [InlineData("accept", "drop")]
    [InlineData("return", "accept")]
    [InlineData("meta mark & 0x4000 == 0 return", "meta mark & 0x4000 == 0x4000 return")]
    [InlineData("meta mark & 0x4000 == 0 return", "meta mark & 0x8000 == 0 return")]
    [InlineData("meta mark set meta mark | 0x4000", "meta mark set meta mark ^ 0x4000")]
    [InlineData("ct state new jump firewall-check", "ct state invalid jump firewall-check")]
    [InlineData("ct state new jump firewall-check", "ct status dnat jump firewall-check")]
    [InlineData("fib saddr type local accept", "fib daddr type local accept")]
    [InlineData("ip saddr 10.244.0.0/16 accept", "ip saddr 10.244.0.0/15 accept")]
    [InlineData("ip saddr 10.244.0.0/15 accept", "ip saddr 10.246.0.0/15 accept")]
    [InlineData("ip saddr 10.244.0.0/16 accept", "ip daddr 10.244.0.0/16 accept")]
    [InlineData("numgen random mod 2 == 0 accept", "numgen random mod 3 == 0 accept")]
    [InlineData("numgen random mod 2 == 0 accept", "numgen random mod 2 == 1 accept")]
    [InlineData("masquerade", "masquerade fully-random")]
    [InlineData("meta l4proto tcp dnat ip to numgen random mod 4096 map @endpoint-slots-tcp-01", "meta l4proto tcp dnat ip to numgen random mod 4096 map @endpoint-slots-tcp-02")]
    [InlineData("meta l4proto tcp dnat ip to numgen random mod 4096 map @endpoint-slots-tcp-01", "meta l4proto tcp dnat ip to numgen random mod 2048 map @endpoint-slots-tcp-01")]
    public void RulesDifferingInOneParameter_CompileToDifferentExpressions(string first, string second)
    {
        // Twice each, so the second compilation of each comes from the cache.
        foreach (var _ in new[] { 1, 2 })
            Assert.NotEqual(Text(Compile(first)), Text(Compile(second)));
        Assert.Equal(Text(Compile(first)), Text(Compile(first)));
    }

    [Fact]
    public void TheSameRuleInBothFamilies_IsNotShared()
    {
        Assert.NotEqual(Text(Compile("meta l4proto tcp dnat ip to numgen random mod 4096 map @endpoint-slots-tcp-01")),
            Text(Compile("meta l4proto tcp dnat ip6 to numgen random mod 4096 map @endpoint-slots-tcp-01", IpFamily.IPv6)));
        Assert.NotEqual(Text(Compile("reject")), Text(Compile("reject", IpFamily.IPv6)));
        Assert.Contains("nat dnat ip6 ", Compile("meta l4proto tcp dnat ip6 to numgen random mod 4096 map @endpoint-slots-tcp-01", IpFamily.IPv6)[^1].ToString());
        Assert.Contains("nat dnat ip ", Compile("meta l4proto tcp dnat ip to numgen random mod 4096 map @endpoint-slots-tcp-01")[^1].ToString());
    }
}
