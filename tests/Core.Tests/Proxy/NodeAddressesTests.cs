using System.Net;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;

namespace ProxyPlanes.Core.Tests.Proxy;

public class NodeAddressesTests
{
    private static readonly IPAddress[] Local =
    [
        IPAddress.Parse("192.168.1.10"),
        IPAddress.Parse("10.0.0.5"),
        IPAddress.Parse("127.0.0.1"),
        IPAddress.Parse("fd00::5"),
        IPAddress.Parse("2001:db8::5"),
        IPAddress.Parse("10.0.0.5"),
        IPAddress.Parse("::ffff:10.0.0.6"),
    ];

    private static EquatableArray<IpPrefix> Prefixes(params string[] texts) => new(texts.Select(IpPrefix.Parse));

    [Fact]
    public void Select_NoPrefixes_NullMeaningEveryAddress()
    {
        var called = false;

        Assert.Null(NodeAddresses.Select(EquatableArray<IpPrefix>.Empty, () => { called = true; return Local; }));
        Assert.False(called);
    }

    [Theory]
    [InlineData("0.0.0.0/0")]
    [InlineData("::/0")]
    public void Select_WholeAddressSpace_Null(string prefix)
    {
        Assert.Null(NodeAddresses.Select(Prefixes("10.0.0.0/8", prefix), () => Local));
    }

    [Fact]
    public void Select_Prefixes_MatchingAddressesSortedWithoutDuplicates()
    {
        var selected = NodeAddresses.Select(Prefixes("fd00::/64", "10.0.0.0/8", "192.168.1.0/24"), () => Local);

        Assert.NotNull(selected);
        Assert.Equal(
            [IPAddress.Parse("10.0.0.5"), IPAddress.Parse("192.168.1.10"), IPAddress.Parse("fd00::5")],
            selected.Value);
    }

    [Fact]
    public void Select_NothingMatches_EmptyNotNull()
    {
        var selected = NodeAddresses.Select(Prefixes("172.16.0.0/12"), () => Local);

        Assert.NotNull(selected);
        Assert.True(selected.Value.IsEmpty);
    }

    [Fact]
    public void Select_HostPrefix_ExactAddress()
    {
        var selected = NodeAddresses.Select(Prefixes("127.0.0.1"), () => Local);

        Assert.Equal([IPAddress.Parse("127.0.0.1")], selected!.Value);
    }

    private static NodeAddress[] Addresses(params (string Type, string Address)[] addresses) =>
        [.. addresses.Select(a => new NodeAddress { Type = a.Type, Address = a.Address })];

    private static IPAddress[] IPs(params string[] texts) => [.. texts.Select(IPAddress.Parse)];

    [Fact]
    public void PrimaryIPs_FirstInternalIPOfEachFamily_ExternalIPOnlyWithoutOne()
    {
        var primary = NodeAddresses.PrimaryIPs(Addresses(
            ("Hostname", "node-a"),
            ("ExternalIP", "198.51.100.7"),
            ("InternalIP", "not-an-ip"),
            ("InternalIP", "127.0.0.1"),
            ("ExternalIP", "2001:db8::7"),
            ("InternalIP", "10.0.0.5"),
            ("InternalIP", "10.0.0.6")));

        // IPv4: the first valid, non-loopback InternalIP beats an earlier ExternalIP; IPv6 has only an ExternalIP.
        Assert.Equal(IPs("10.0.0.5", "2001:db8::7"), primary);
    }

    [Fact]
    public void PrimaryIPs_NoAddresses_Empty()
    {
        Assert.True(NodeAddresses.PrimaryIPs(null).IsEmpty);
        Assert.True(NodeAddresses.PrimaryIPs(Addresses(("Hostname", "node-a"), ("InternalIP", "::1"))).IsEmpty);
    }

    [Fact]
    public void SelectPrimary_NoPrimaryIP_NullMeaningEveryAddress()
    {
        Assert.Null(NodeAddresses.SelectPrimary(EquatableArray<IPAddress>.Empty, () => Local));
    }

    [Fact]
    public void SelectPrimary_BothFamiliesKnown_OnlyThePrimaryIPs()
    {
        var selected = NodeAddresses.SelectPrimary(new(IPs("fd00::5", "10.0.0.5")), () => Local);

        Assert.Equal(IPs("10.0.0.5", "fd00::5"), selected!.Value);
    }

    [Fact]
    public void SelectPrimary_OneFamilyKnown_OtherFamilyKeepsItsAddressesButLoopbackAndLinkLocal()
    {
        var selected = NodeAddresses.SelectPrimary(new(IPs("192.168.1.10")), () => [.. Local, IPAddress.Parse("::1"), IPAddress.Parse("fe80::1")]);

        Assert.Equal(IPs("192.168.1.10", "::ffff:10.0.0.6", "2001:db8::5", "fd00::5"), selected!.Value);
    }

    [Fact]
    public void SelectPrimary_PrimaryIPNotOnAnyInterface_ThatFamilyAcceptsNothing()
    {
        var selected = NodeAddresses.SelectPrimary(new(IPs("10.9.9.9", "fd00::5")), () => Local);

        Assert.Equal(IPs("fd00::5"), selected!.Value);
    }
}
