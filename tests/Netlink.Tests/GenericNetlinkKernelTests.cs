namespace ProxyPlanes.Netlink.Tests;

/// <summary>Generic netlink family resolution against the real kernel, inside a throwaway namespace.</summary>
[Collection(KernelNetlinkCollection.Name)]
public sealed class GenericNetlinkKernelTests
{
    [Fact]
    public void ResolveFamily_Controller_HasItsFixedId()
    {
        using var ns = new TestNamespace("nl");
        using var socket = ns.Run(() => NetlinkSocket.Open(LinuxUapi.Netlink.NETLINK_GENERIC));

        var family = GenericNetlink.ResolveFamily(socket, GenericNetlink.ControllerName);

        Assert.Equal("nlctrl", family.Name);
        Assert.Equal(LinuxUapi.GenericNetlink.GENL_ID_CTRL, family.Id);
        Assert.True(family.Version >= 1);
    }

    [Fact]
    public void ResolveFamily_Unknown_SaysWhatIsMissing()
    {
        using var ns = new TestNamespace("nl");
        using var socket = ns.Run(() => NetlinkSocket.Open(LinuxUapi.Netlink.NETLINK_GENERIC));

        var e = Assert.Throws<GenericNetlinkFamilyNotFoundException>(() => GenericNetlink.ResolveFamily(socket, "NO-SUCH-FAMILY", "the kernel has no such thing"));

        Assert.Equal("the kernel has no such thing: the kernel does not know the generic netlink family \"NO-SUCH-FAMILY\" (ENOENT)", e.Message);
    }

    [Fact]
    public void IpvsClient_Open_ResolvesIpvsOrSaysTheKernelHasNone()
    {
        using var ns = new TestNamespace("nl");

        if (KernelConfig.Has("CONFIG_IP_VS") == false)
        {
            var e = Assert.Throws<GenericNetlinkFamilyNotFoundException>(() => ns.Run(IpvsClient.Open));
            Assert.StartsWith("the kernel has no IPVS (modprobe ip_vs)", e.Message);
            Assert.Equal("IPVS", e.Family);
            return;
        }
        // With IPVS (the VM lane): the family resolves and the new namespace's table is empty.
        using var ipvs = ns.Run(IpvsClient.Open);
        Assert.Equal("IPVS", ipvs.Family.Name);
        Assert.Empty(ipvs.ListServices());
    }
}
