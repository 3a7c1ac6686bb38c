using System.Net;
using Microsoft.Extensions.Logging;
using ProxyPlanes.Backends.Nftables.Tests;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;
using ProxyPlanes.Netlink;
using ProxyPlanes.NodeTools;
using ProxyPlanes.TestKit;

namespace ProxyPlanes.Backends.Ipvs.Tests;

/// <summary>
/// kube-proxy's <c>ipvs</c> settings as the mode's options carry them (excludeCIDRs, strictARP, the IPVS
/// timeouts) and the crash tests' pause hook, over the in-memory kernel; the strictARP writer over a
/// folder standing in for /proc/sys (<see cref="StrictArpKernelTests"/> writes a real namespace's).
/// </summary>
public sealed partial class IpvsBackendTests
{
    private readonly ListLogger _logger = new();

    private IpvsBackend Backend(ProxyModeOptions options, int? pause = null) =>
        IpvsBackend.Create(options, _kernel, [IpFamily.IPv4], _metrics, _logger, pause);

    private IEnumerable<string> Warnings => _logger.Entries.Where(e => e.Level == LogLevel.Warning).Select(e => e.Message);

    [Fact]
    public async Task Timeouts_SetOnceBeforeTheFirstSync_ZeroKeepsTheKernelsValue()
    {
        var before = await _kernel.GetTimeoutsAsync(default);
        var backend = Backend(new ProxyModeOptions { IpvsTimeouts = new IpvsTimeoutSettings(TimeSpan.FromMinutes(10), TimeSpan.Zero, TimeSpan.FromSeconds(45.9)) });

        await backend.SyncAsync(StateBuilder.Full(WebWith(StateBuilder.Endpoint("10.244.1.2"))), default);

        Assert.Equal(new IpvsTimeouts(900, 120, 300), before); // positive control: the kernel's defaults differ
        Assert.Equal(new IpvsTimeouts(600, 120, 45), await _kernel.GetTimeoutsAsync(default)); // whole seconds, as kube-proxy sends them
        Assert.Contains(_logger.Entries, e => e.Message.Contains("IPVS timeouts now tcp 600s, tcpfin 120s, udp 45s", StringComparison.Ordinal));
        Assert.Equal(0, _kernel.StrictArpRequests); // strictARP not asked for
    }

    [Fact]
    public async Task NoTimeouts_TheKernelsStayUntouched()
    {
        var backend = Backend(new ProxyModeOptions());

        await backend.SyncAsync(StateBuilder.Full(WebWith(StateBuilder.Endpoint("10.244.1.2"))), default);

        Assert.Equal(new IpvsTimeouts(900, 120, 300), await _kernel.GetTimeoutsAsync(default));
        Assert.DoesNotContain(_logger.Entries, e => e.Message.Contains("timeout", StringComparison.OrdinalIgnoreCase));
    }

    [Fact]
    public async Task TimeoutsTheKernelRefuses_OneWarningLine_TheSyncStillSucceeds()
    {
        var backend = Backend(new ProxyModeOptions { IpvsTimeouts = new IpvsTimeoutSettings(TimeSpan.FromDays(100), TimeSpan.Zero, TimeSpan.Zero) });

        await backend.SyncAsync(StateBuilder.Full(WebWith(StateBuilder.Endpoint("10.244.1.2"))), default);

        var warning = Assert.Single(Warnings);
        Assert.StartsWith("ipvs.tcpTimeout/tcpFinTimeout/udpTimeout: cannot set the IPVS timeouts to tcp 8640000s, tcpfin 0s, udp 0s (IPVS SET_CONFIG", warning);
        Assert.DoesNotContain('\n', warning);
        Assert.NotNull(_kernel.Destination(Web, new RealServerKey(IPAddress.Parse("10.244.1.2"), 8080)));
        Assert.Equal(new IpvsTimeouts(900, 120, 300), await _kernel.GetTimeoutsAsync(default));
    }

    [Fact]
    public async Task StrictArp_AskedOnceAtTheFirstSync()
    {
        var backend = Backend(new ProxyModeOptions { IpvsStrictArp = true });

        await backend.SyncAsync(StateBuilder.Full(WebWith(StateBuilder.Endpoint("10.244.1.2"))), default);
        await backend.SyncAsync(StateBuilder.Full(WebWith(StateBuilder.Endpoint("10.244.1.3"))), default);

        Assert.Equal(1, _kernel.StrictArpRequests);
    }

    [Fact]
    public async Task ExcludeCidrs_FromTheModeOptions_KeepForeignServersThere()
    {
        var theirs = new VirtualServerKey(IPAddress.Parse("192.168.50.1"), Protocol.TCP, 80);
        var stray = new VirtualServerKey(IPAddress.Parse("10.96.9.9"), Protocol.TCP, 80);
        await _kernel.ApplyAsync([new AddService(new VirtualServer(theirs, "wlc")), new AddService(new VirtualServer(stray, "rr"))], default);
        var backend = Backend(new ProxyModeOptions { IpvsExcludeCidrs = new EquatableArray<IpPrefix>([IpPrefix.Parse("192.168.50.0/24")]) });

        await backend.SyncAsync(StateBuilder.Full(WebWith(StateBuilder.Endpoint("10.244.1.2"))), default);

        Assert.Equal([IpPrefix.Parse("192.168.50.0/24")], backend.Options.ExcludeCidrs);
        Assert.Equal([Web, theirs], _kernel.Services); // the stray one (positive control) is deleted
    }

    [Fact]
    public async Task Cleanup_WithTheConfiguredExcludeCidrs_KeepsForeignServersThere()
    {
        // proxyplanes cleanup --mode=ipvs (and starting another mode) runs with the operator's excludeCIDRs.
        var theirs = new VirtualServerKey(IPAddress.Parse("192.168.50.1"), Protocol.TCP, 80);
        var backend = Backend(IpvsMode.CleanupOptions(new CleanupScope { IpvsExcludeCidrs = new EquatableArray<IpPrefix>([IpPrefix.Parse("192.168.50.0/24")]) }));
        await backend.SyncAsync(StateBuilder.Full(WebWith(StateBuilder.Endpoint("10.244.1.2"))), default);
        await _kernel.ApplyAsync([new AddService(new VirtualServer(theirs, "wlc"))], default);
        Assert.Equal([Web, theirs], _kernel.Services);

        await backend.CleanupAsync(default);

        Assert.Equal([theirs], _kernel.Services); // ours (the positive control) is gone

        // Without the setting, cleanup removes every virtual server it finds, as kube-proxy's does.
        await Backend(IpvsMode.CleanupOptions(CleanupScope.Everything)).CleanupAsync(default);
        Assert.Empty(_kernel.Services);
    }

    [Fact]
    public async Task PauseHook_AppliesTheFirstNIpvsOperations_ThenWaits_ACancelledSyncIsRepairedByAFullOne()
    {
        var backend = Backend(new ProxyModeOptions(), pause: 3);
        var endpoints = Enumerable.Range(2, 5).Select(i => StateBuilder.Endpoint($"10.244.1.{i}")).ToArray();
        var state = WebWith(endpoints); // 1 virtual server + 5 destinations: 6 IPVS operations
        using var cancel = new CancellationTokenSource();

        var sync = backend.SyncAsync(StateBuilder.Full(state), cancel.Token);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (!_logger.Entries.Any(e => e.Message.Contains("paused after 3 IPVS operations", StringComparison.Ordinal)) && DateTime.UtcNow < deadline)
            await Task.Delay(10);

        Assert.False(sync.IsCompleted);
        Assert.Equal(2, (await _kernel.ReadDestinationsAsync([Web], default))[Web].Count); // the service and two of its five destinations: half applied
        await cancel.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => sync);

        var repairing = Backend(new ProxyModeOptions());
        await repairing.SyncAsync(StateBuilder.Full(state), default);
        Assert.Equal(5, (await _kernel.ReadDestinationsAsync([Web], default))[Web].Count);

        // A plan with no more IPVS operations than N is not paused.
        var small = Backend(new ProxyModeOptions(), pause: 3);
        await small.SyncAsync(StateBuilder.Full(WebWith(endpoints[..2])), default).WaitAsync(TimeSpan.FromSeconds(10));
    }

    [Fact]
    public void StrictArp_RaisesBothSysctls_KeepsAStricterValue_ReadOnlyIsOneWarning()
    {
        var root = Directory.CreateTempSubdirectory("pp-arp-");
        try
        {
            var conf = Path.Combine(root.FullName, "net", "ipv4", "conf", "all");
            Directory.CreateDirectory(conf);
            File.WriteAllText(Path.Combine(conf, "arp_ignore"), "2\n");
            File.WriteAllText(Path.Combine(conf, "arp_announce"), "0\n");

            Assert.Empty(IpvsKernel.EnsureStrictArp(new Sysctls(_logger, root.FullName), _logger));
            Assert.Equal("2", File.ReadAllText(Path.Combine(conf, "arp_ignore")).Trim()); // stricter than 1: kept
            Assert.Equal("2", File.ReadAllText(Path.Combine(conf, "arp_announce")).Trim());
            Assert.Contains(_logger.Entries, e => e.Message == "ipvs.strictARP: set net.ipv4.conf.all.arp_announce to 2 (was 0)");

            // Directories where the files should be: writing fails as on a read-only /proc/sys.
            foreach (var name in new[] { "arp_ignore", "arp_announce" })
            {
                File.Delete(Path.Combine(conf, name));
                Directory.CreateDirectory(Path.Combine(conf, name));
            }
            var failed = IpvsKernel.EnsureStrictArp(new Sysctls(_logger, root.FullName), _logger);

            Assert.Equal(["net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2"], failed);
            var warning = Assert.Single(Warnings);
            Assert.StartsWith("ipvs.strictARP: cannot set net.ipv4.conf.all.arp_ignore=1, net.ipv4.conf.all.arp_announce=2 (", warning);
        }
        finally
        {
            root.Delete(recursive: true);
        }
    }
}
