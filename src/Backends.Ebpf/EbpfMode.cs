using System.Diagnostics;
using Microsoft.Extensions.Logging;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Metrics;
using ProxyPlanes.Model;

namespace ProxyPlanes.Backends.Ebpf;

/// <summary>--mode=ebpf, as the daemon, cleanup, the demo and the benchmark see it.</summary>
public sealed class EbpfMode : IProxyMode
{
    /// <summary>
    /// What this mode does not render yet, said once at start (and in the README's per-mode table).
    /// </summary>
    public const string NotRenderedYet =
        "--mode=ebpf renders IPv4 and IPv6 TCP and UDP: socket hooks for processes in --bpf-cgroup, tc programs on the node's interfaces for traffic from off the node; " +
        "it does not render yet: SCTP (and, on a kernel with neither bpf_sock_destroy (6.5) nor CONFIG_INET_DIAG_DESTROY, destroying a connected local UDP socket whose endpoint went)";

    public static EbpfMode Instance { get; } = new();

    private EbpfMode()
    {
    }

    public string Name => "ebpf";

    public IKernelExplainer Explainer { get; } = new EbpfExplainer();

    /// <summary>Root, bpf(2), a cgroup v2 mount, kernel 5.18 (bpf_set_retval), and a verifier that accepts bpf/sock.c.</summary>
    public Task<string?> KernelProblemAsync(CancellationToken cancellationToken) => Task.FromResult(KernelProblem());

    /// <summary>The one-line reason this kernel cannot run the mode, or null.</summary>
    public static string? KernelProblem(string? cgroup = null)
    {
        if (!File.Exists("/proc/sys/kernel/unprivileged_bpf_disabled")) return "--mode=ebpf: this kernel has no bpf(2) (CONFIG_BPF_SYSCALL); use iptables or nftables";
        if ((cgroup ?? EbpfLocation.HostCgroup2Root()) is null) return "--mode=ebpf: no cgroup v2 is mounted (the socket hooks attach to one); mount one or use iptables or nftables";
        var release = File.ReadAllText("/proc/sys/kernel/osrelease").Trim().Split('.', '-');
        if (release.Length >= 2 && int.TryParse(release[0], out var major) && int.TryParse(release[1], out var minor) && new Version(major, minor) < new Version(5, 18))
            return $"--mode=ebpf: kernel {major}.{minor} is older than 5.18 (bpf_set_retval, to refuse a service without endpoints); use iptables or nftables";
        try
        {
            using var probe = SockPrograms.Load();
        }
        catch (BpfException e)
        {
            return $"--mode=ebpf: this kernel refuses the socket hooks of bpf/sock.c: {e.Message.Split('\n')[0]}";
        }
        return null;
    }

    /// <summary>The settings' bpf filesystem and cgroup, defaults filled in.</summary>
    public static EbpfLocation Location(ProxyModeOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var cgroup = options.BpfCgroup ?? EbpfLocation.HostCgroup2Root()
            ?? throw new BpfException(2, "--bpf-cgroup", "no cgroup v2 is mounted; pass --bpf-cgroup DIR");
        return new EbpfLocation(options.BpfFs ?? EbpfLocation.DefaultBpfFs, cgroup);
    }

    public Task<ProxyModeBackend> CreateAsync(ProxyModeOptions options, ProxyMetrics metrics, ILogger logger, CancellationToken cancellationToken)
    {
        var location = Location(options);
        logger.LogWarning("{NotRendered}", NotRenderedYet);
        var kernel = EbpfKernel.Open(location, logger);
        var backend = new EbpfBackend(kernel, metrics, logger, () =>
        {
            EbpfKernel.Remove(location.BpfFs, logger);
            EbpfKernel.RemoveNamespaceState(logger);
        });
        return Task.FromResult(new ProxyModeBackend(backend, new Probe(kernel)));
    }

    /// <summary>Detaches and unpins everything under the scope's <c>--bpf-fs</c>; nothing of another mode is ours.</summary>
    public Task CleanupAsync(ProxyMetrics metrics, ILogger logger, CleanupScope scope, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(scope);
        var bpfFs = scope.BpfFs ?? EbpfLocation.DefaultBpfFs;
        // Without a bpf filesystem there, nothing of ours can be pinned (and nothing is mounted to find out).
        if (EbpfLocation.IsBpfFs(bpfFs) && EbpfKernel.Remove(bpfFs, logger).Count == 0) logger.LogInformation("No eBPF mode state of ours found in {BpfFs}", bpfFs);
        // The fixed nftables table (deleting an absent one is nothing).
        EbpfKernel.RemoveNamespaceState(logger);
        return Task.CompletedTask;
    }

    /// <summary>Map entries as the kernel holds them; no floor (a map write is its own floor).</summary>
    private sealed class Probe(EbpfKernel kernel) : IKernelProbe
    {
        public Task<IReadOnlyDictionary<string, long>> CountKernelObjectsAsync(CancellationToken cancellationToken)
        {
            var contents = kernel.Read();
            return Task.FromResult<IReadOnlyDictionary<string, long>>(new Dictionary<string, long>
            {
                ["service entries"] = contents.Services.Count,
                ["backends"] = contents.Backends.Count,
            });
        }

        public Task<TimeSpan?> FloorAsync(CancellationToken cancellationToken) => Task.FromResult<TimeSpan?>(null);

        /// <summary>One <c>bpf_map_update_elem</c> of a scratch backend id no service names, then its delete.</summary>
        public Task<IReadOnlyList<TimeSpan>?> ChangeFloorAsync(CancellationToken cancellationToken)
        {
            var map = kernel.Backends;
            Span<byte> key = stackalloc byte[map.KeySize];
            key.Fill(0xff); // the highest id: the planner allocates from the bottom
            Span<byte> value = stackalloc byte[map.ValueSize];
            value.Clear();
            var add = Stopwatch.StartNew();
            map.Update(key, value, BpfUpdateFlags.NoExist);
            add.Stop();
            var delete = Stopwatch.StartNew();
            map.Delete(key);
            delete.Stop();
            return Task.FromResult<IReadOnlyList<TimeSpan>?>([add.Elapsed, delete.Elapsed]);
        }

        public Task<IReadOnlySet<string>> EndpointsInKernelAsync(CancellationToken cancellationToken) =>
            Task.FromResult<IReadOnlySet<string>>(kernel.Read().Backends.Values.Where(b => b.Address.IsIPv4)
                .Select(b => EbpfText.Endpoint(b.Address.ToIPAddress(), b.Port)).ToHashSet());
    }
}
