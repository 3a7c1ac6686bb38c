using Microsoft.Extensions.Logging;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Metrics;
using ProxyPlanes.Model;
using ProxyPlanes.NodeTools;

namespace ProxyPlanes.Backends.Ipvs;

/// <summary>--mode=ipvs, as the daemon, cleanup, the demo and the benchmark see it.</summary>
public sealed class IpvsMode : IProxyMode
{
    public static IpvsMode Instance { get; } = new();

    private IpvsMode()
    {
    }

    public string Name => "ipvs";

    /// <summary>IPVS needs the ip_vs module: it is loaded if it can be (as kube-proxy does).</summary>
    public async Task<string?> KernelProblemAsync(CancellationToken cancellationToken)
    {
        if (File.Exists("/proc/net/ip_vs")) return null;
        try
        {
            await ExternalCommand.RunAsync("modprobe", ["ip_vs"], null, cancellationToken);
        }
        catch (CommandException)
        {
            // No modprobe: the check below says what matters.
        }
        return File.Exists("/proc/net/ip_vs") ? null
            : "--mode=ipvs: this kernel has no IPVS (the ip_vs module cannot be loaded); use iptables or nftables, or the VM lane (vm/README.md)";
    }

    public async Task<ProxyModeBackend> CreateAsync(ProxyModeOptions options, ProxyMetrics metrics, ILogger logger, CancellationToken cancellationToken)
    {
        var backend = await IpvsBackend.CreateAsync(options, metrics, logger, cancellationToken);
        return new ProxyModeBackend(backend, new Probe(backend));
    }

    /// <summary>Works on a kernel without IPVS too (then only the helper rules and ipsets can be there).</summary>
    public bool OwnsIptablesChain(string table, string chain) => IpvsNames.Owns(table, chain);

    /// <summary><c>proxyplanes explain</c>: the IPVS table, kube-ipvs0, the ipsets and the helper rules, read from the kernel.</summary>
    public IKernelExplainer Explainer { get; } = new IpvsExplainer();

    /// <summary>Virtual servers inside the scope's excludeCIDRs stay (kube-proxy's cleanup flushes every one).</summary>
    public async Task CleanupAsync(ProxyMetrics metrics, ILogger logger, CleanupScope scope, CancellationToken cancellationToken) =>
        await (await IpvsBackend.CreateAsync(CleanupOptions(scope), metrics, logger, cancellationToken)).CleanupAsync(cancellationToken, scope.Running is null ? null : scope.Running.OwnsIptablesChain);

    /// <summary>The backend settings a cleanup runs with: only what it must leave alone, both families.</summary>
    public static ProxyModeOptions CleanupOptions(CleanupScope scope) => new() { IpvsExcludeCidrs = scope.IpvsExcludeCidrs };

    /// <summary>Counts virtual servers, real servers and kube-ipvs0's addresses as the kernel reports them; no floor (no bulk-load tool).</summary>
    private sealed class Probe(IpvsBackend backend) : IKernelProbe
    {
        public async Task<IReadOnlyDictionary<string, long>> CountKernelObjectsAsync(CancellationToken cancellationToken)
        {
            using var kernel = new IpvsKernel();
            var view = await kernel.ReadAsync(backend.Options.Families, cancellationToken);
            return new Dictionary<string, long>
            {
                ["virtual servers"] = view.Services.Count,
                ["real servers"] = view.Services.Values.Sum(s => (long)s.Destinations.Count),
                ["addresses"] = view.LinkAddresses.Count,
                ["ipset entries"] = view.Ipsets.Values.Sum(s => (long)s.Count),
            };
        }

        public Task<TimeSpan?> FloorAsync(CancellationToken cancellationToken) => Task.FromResult<TimeSpan?>(null);

        /// <summary>Not measured yet (IPVS runs in the VM lane, where a partial sync's ~1 s is not yet traced).</summary>
        public Task<IReadOnlyList<TimeSpan>?> ChangeFloorAsync(CancellationToken cancellationToken) => Task.FromResult<IReadOnlyList<TimeSpan>?>(null);

        /// <summary>The real servers of every IPv4 virtual server, as the kernel reports them.</summary>
        public async Task<IReadOnlySet<string>> EndpointsInKernelAsync(CancellationToken cancellationToken)
        {
            using var kernel = new IpvsKernel();
            var view = await kernel.ReadAsync(backend.Options.Families, cancellationToken);
            return view.Services.Values.SelectMany(s => s.Destinations)
                .Where(d => d.Key.Address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork)
                .Select(d => $"{d.Key.Address}:{d.Key.Port}").ToHashSet();
        }
    }
}
