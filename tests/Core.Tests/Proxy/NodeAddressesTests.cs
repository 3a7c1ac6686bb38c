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
}
