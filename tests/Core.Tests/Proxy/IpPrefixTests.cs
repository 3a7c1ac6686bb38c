using System.Net;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;

namespace ProxyPlanes.Core.Tests.Proxy;

public class IpPrefixTests
{
    [Theory]
    [InlineData("10.0.0.0/8", "10.0.0.0", 8, IpFamily.IPv4)]
    [InlineData("10.1.2.3/8", "10.0.0.0", 8, IpFamily.IPv4)] // host bits are masked, as Go's ParseCIDR does
    [InlineData("192.168.1.5/24", "192.168.1.0", 24, IpFamily.IPv4)]
    [InlineData("0.0.0.0/0", "0.0.0.0", 0, IpFamily.IPv4)]
    [InlineData("fd00::/64", "fd00::", 64, IpFamily.IPv6)]
    [InlineData("2001:db8::1/32", "2001:db8::", 32, IpFamily.IPv6)]
    [InlineData("192.0.2.7", "192.0.2.7", 32, IpFamily.IPv4)]
    [InlineData("fd00::7", "fd00::7", 128, IpFamily.IPv6)]
    [InlineData(" 10.244.0.0/16 ", "10.244.0.0", 16, IpFamily.IPv4)]
    [InlineData("010.001.0.0/16", "10.1.0.0", 16, IpFamily.IPv4)] // leading zeros are decimal, never octal
    [InlineData("::ffff:10.0.0.1", "::ffff:10.0.0.1", 128, IpFamily.IPv6)]
    public void TryParse_Valid_NormalizedPrefix(string text, string address, int length, IpFamily family)
    {
        Assert.True(IpPrefix.TryParse(text, out var prefix));

        Assert.Equal(IPAddress.Parse(address), prefix.Address);
        Assert.Equal(length, prefix.Length);
        Assert.Equal(family, prefix.Family);
        Assert.Equal($"{address}/{length}", prefix.ToString());
    }

    [Theory]
    [InlineData("")]
    [InlineData("10.0.0.0/33")]
    [InlineData("fd00::/129")]
    [InlineData("10.0.0.0/-1")]
    [InlineData("not-a-cidr")]
    [InlineData("10.0.0.0/")]
    [InlineData("10")] // IPAddress.TryParse alone reads this as 0.0.0.10
    [InlineData("10/8")]
    [InlineData("10.1/16")] // ... and this as 10.0.0.1
    [InlineData("10.96.0")]
    [InlineData("0x0a.0.0.0/8")]
    [InlineData("1.2.3.4.5")]
    [InlineData("10.0.0.256")]
    [InlineData("fd00::1%eth0")]
    [InlineData("[fd00::1]")]
    [InlineData("[::1]:80")]
    public void TryParse_Invalid_ReturnsFalse(string text)
    {
        Assert.False(IpPrefix.TryParse(text, out _));
        Assert.Throws<FormatException>(() => IpPrefix.Parse(text));
    }

    [Fact]
    public void Contains_AddressesInsideAndOutside_Correct()
    {
        var prefix = IpPrefix.Parse("10.244.0.0/16");

        Assert.True(prefix.Contains(IPAddress.Parse("10.244.0.1")));
        Assert.True(prefix.Contains(IPAddress.Parse("10.244.255.255")));
        Assert.False(prefix.Contains(IPAddress.Parse("10.245.0.1")));
        Assert.False(prefix.Contains(IPAddress.Parse("fd00::1")));
    }

    [Fact]
    public void Equals_SameNetworkWrittenDifferently_Equal()
    {
        Assert.Equal(IpPrefix.Parse("10.1.2.3/8"), IpPrefix.Parse("10.0.0.0/8"));
        Assert.NotEqual(IpPrefix.Parse("10.0.0.0/8"), IpPrefix.Parse("10.0.0.0/16"));
    }

    [Theory]
    [InlineData("10.96.0.10", "10.96.0.10")]
    [InlineData("010.096.000.010", "10.96.0.10")]
    [InlineData("255.255.255.255", "255.255.255.255")]
    [InlineData("0.0.0.0", "0.0.0.0")]
    [InlineData("fd00::10", "fd00::10")]
    [InlineData("FD00:0:0::10", "fd00::10")]
    public void TryParseAddress_KubernetesForms_Parsed(string text, string expected)
    {
        Assert.True(IpPrefix.TryParseAddress(text, out var address));
        Assert.Equal(IPAddress.Parse(expected), address);
    }

    [Theory]
    [InlineData("")]
    [InlineData("10")]
    [InlineData("10.96.0")]
    [InlineData("4294967295")]
    [InlineData("0x0a.0.0.1")]
    [InlineData("10.0.0.1.")]
    [InlineData("10..0.1")]
    [InlineData("+1.2.3.4")]
    [InlineData("1000.0.0.1")]
    [InlineData("1.2.3.4.5")]
    [InlineData("256.0.0.1")]
    [InlineData("1.2.3.-4")]
    [InlineData(" 1.2.3.4")]
    [InlineData(".1.2.3")]
    [InlineData("fd00::1%2")]
    [InlineData("[::1]:80")]
    [InlineData("fd00:::1")]
    public void TryParseAddress_OtherForms_Rejected(string text)
    {
        Assert.False(IpPrefix.TryParseAddress(text, out var address));
        Assert.Null(address);
    }
}
