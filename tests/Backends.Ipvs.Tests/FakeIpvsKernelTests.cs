using System.Net;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;

namespace ProxyPlanes.Backends.Ipvs.Tests;

/// <summary>The in-memory kernel refuses what the kernel and the tools refuse.</summary>
public sealed class FakeIpvsKernelTests
{
    private static readonly VirtualServerKey Web = new(IPAddress.Parse("10.96.0.10"), Protocol.TCP, 80);
    private static readonly RealServerKey Pod = new(IPAddress.Parse("10.244.1.2"), 8080);

    private static async Task<string> RefusedAsync(FakeIpvsKernel kernel, params IpvsOperation[] operations) =>
        (await Assert.ThrowsAsync<IpvsKernelException>(() => kernel.ApplyAsync(operations, default))).Message;

    [Fact]
    public async Task ServiceAddedTwice_IsRefused()
    {
        var kernel = new FakeIpvsKernel();
        var message = await RefusedAsync(kernel, new AddService(new VirtualServer(Web, "rr")), new AddService(new VirtualServer(Web, "rr")));

        Assert.Equal("ipvsadm -A -t 10.96.0.10:80 -s rr: File exists (EEXIST)", message);
        Assert.Single(kernel.Services); // the first one stays: operations are not a transaction
    }

    [Fact]
    public async Task DestinationOfAMissingService_IsRefused()
    {
        Assert.EndsWith("No such process (ESRCH)", await RefusedAsync(new FakeIpvsKernel(), new AddDestination(Web, Pod, 1)));
    }

    [Fact]
    public async Task DestinationOfTheOtherFamily_IsRefused()
    {
        var kernel = new FakeIpvsKernel();
        await kernel.ApplyAsync([new AddService(new VirtualServer(Web, "rr"))], default);

        Assert.EndsWith("(EINVAL)", await RefusedAsync(kernel, new AddDestination(Web, new RealServerKey(IPAddress.Parse("fd00::2"), 80), 1)));
    }

    [Fact]
    public async Task MissingDestination_CannotBeEditedOrDeleted()
    {
        var kernel = new FakeIpvsKernel();
        await kernel.ApplyAsync([new AddService(new VirtualServer(Web, "rr"))], default);

        Assert.EndsWith("(ENOENT)", await RefusedAsync(kernel, new EditDestination(Web, Pod, 0)));
        Assert.EndsWith("(ENOENT)", await RefusedAsync(kernel, new DeleteDestination(Web, Pod)));
        Assert.EndsWith("(ESRCH)", await RefusedAsync(kernel, new DeleteService(new VirtualServerKey(IPAddress.Parse("10.96.0.11"), Protocol.TCP, 80))));
    }

    [Fact]
    public async Task UnknownScheduler_IsRefused()
    {
        Assert.EndsWith("(ENOENT)", await RefusedAsync(new FakeIpvsKernel(), new AddService(new VirtualServer(Web, "fastest"))));
    }

    [Fact]
    public async Task AddressWithoutTheLink_OrTwice_IsRefused()
    {
        var kernel = new FakeIpvsKernel();
        Assert.EndsWith("(ENODEV)", await RefusedAsync(kernel, new AddAddress(IpvsNames.Link, IPAddress.Parse("10.96.0.10"))));

        await kernel.ApplyAsync([new CreateLink(IpvsNames.Link), new AddAddress(IpvsNames.Link, IPAddress.Parse("10.96.0.10"))], default);
        Assert.EndsWith("(EEXIST)", await RefusedAsync(kernel, new AddAddress(IpvsNames.Link, IPAddress.Parse("10.96.0.10"))));
        Assert.EndsWith("(EADDRNOTAVAIL)", await RefusedAsync(kernel, new DeleteAddress(IpvsNames.Link, IPAddress.Parse("10.96.0.11"))));
    }

    [Theory]
    [InlineData("add KUBE-CLUSTER-IP 10.96.0.10,tcp:80\n", "does not exist")]
    [InlineData("create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536\nadd KUBE-CLUSTER-IP 10.96.0.10:80\n", "is not an entry")]
    [InlineData("create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536\nadd KUBE-CLUSTER-IP fd00::1,tcp:80\n", "is not an entry")]
    [InlineData("create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536\ncreate KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536\n", "already exists")]
    public async Task BadIpsetScript_IsRefused(string script, string error)
    {
        Assert.Contains(error, await RefusedAsync(new FakeIpvsKernel(), new IpsetRestore(script)));
    }

    [Fact]
    public async Task RuleMatchingAMissingSetOrJumpingNowhere_IsRefused_AndTheTableIsUnchanged()
    {
        var kernel = new FakeIpvsKernel();
        var before = kernel.Dump();

        Assert.Contains("Set KUBE-CLUSTER-IP doesn't exist", await RefusedAsync(kernel,
            new IptablesRestore(IpFamily.IPv4, "*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT\nCOMMIT\n")));
        Assert.Contains("target 'KUBE-NOWHERE'", await RefusedAsync(kernel,
            new IptablesRestore(IpFamily.IPv4, "*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -j KUBE-NOWHERE\nCOMMIT\n")));
        Assert.Equal(before, kernel.Dump());
    }

    [Fact]
    public async Task SetInUse_CannotBeDestroyed()
    {
        var kernel = new FakeIpvsKernel();
        await kernel.ApplyAsync([
            new IpsetRestore("create KUBE-IPVS-IPS hash:ip family inet hashsize 1024 maxelem 65536\n"),
            new IptablesRestore(IpFamily.IPv4, "*filter\n:KUBE-IPVS-FILTER - [0:0]\n-A KUBE-IPVS-FILTER -m set --match-set KUBE-IPVS-IPS dst -j REJECT\nCOMMIT\n"),
        ], default);

        Assert.Contains("in use", await RefusedAsync(kernel, new IpsetRestore("destroy KUBE-IPVS-IPS\n")));
    }
}
