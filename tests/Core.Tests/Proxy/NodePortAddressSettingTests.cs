using ProxyPlanes.Core.Proxy;
using ProxyPlanes.Model;

namespace ProxyPlanes.Core.Tests.Proxy;

public class NodePortAddressSettingTests
{
    private static NodePortAddressSetting Parse(params string[] values) =>
        NodePortAddressSetting.Parse(values, (index, problem) => new FormatException($"[{index}] {problem}"));

    [Fact]
    public void Parse_Nothing_All()
    {
        Assert.Same(NodePortAddressSetting.All, Parse());
        Assert.Equal("all", Parse().ToString());
    }

    [Fact]
    public void Parse_Primary_PrimaryIPs()
    {
        var setting = Parse("primary");

        Assert.True(setting.Primary);
        Assert.True(setting.Cidrs.IsEmpty);
        Assert.Equal("primary", setting.ToString());
    }

    [Fact]
    public void Parse_Cidrs_KeptInOrder()
    {
        var setting = Parse("10.0.0.0/8", "fd00::/64");

        Assert.False(setting.Primary);
        Assert.Equal([IpPrefix.Parse("10.0.0.0/8"), IpPrefix.Parse("fd00::/64")], setting.Cidrs);
        Assert.Equal("10.0.0.0/8,fd00::/64", setting.ToString());
    }

    [Theory]
    [InlineData(new[] { "10.0.0.0/8", "primary" }, "[1] 'primary' (the node's primary IPs) cannot be combined with other values; give either 'primary' alone or CIDRs")]
    [InlineData(new[] { "primary", "10.0.0.0/8" }, "[0] 'primary' (the node's primary IPs) cannot be combined with other values")]
    [InlineData(new[] { "primary", "primary" }, "[0] 'primary' (the node's primary IPs) cannot be combined with other values")]
    [InlineData(new[] { "10.0.0.0/8", "10.0.0.1" }, "[1] '10.0.0.1' is not a CIDR such as 10.244.0.0/16, nor 'primary'")]
    [InlineData(new[] { "Primary" }, "[0] 'Primary' is not a CIDR such as 10.244.0.0/16, nor 'primary'")]
    public void Parse_BadValue_NamesItsIndexAndTheProblem(string[] values, string expected)
    {
        var e = Assert.Throws<FormatException>(() => Parse(values));

        Assert.StartsWith(expected, e.Message);
    }
}
