using Microsoft.Extensions.Logging;
using ProxyPlanes.Backends.Ebpf;
using ProxyPlanes.Backends.Iptables;
using ProxyPlanes.Backends.Ipvs;
using ProxyPlanes.Backends.Nftables;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Metrics;
using ProxyPlanes.Model;

namespace ProxyPlanes;

/// <summary>
/// The modes of this build: the one place that lists the data planes. The daemon, cleanup, the
/// config file, the demo and the benchmark look modes up here; each data plane describes itself in
/// its own assembly (<see cref="IProxyMode"/>).
/// </summary>
public static class Modes
{
    public static ProxyModeRegistry Registry { get; } = new([IptablesMode.Instance, NftablesMode.Instance, IpvsMode.Instance, EbpfMode.Instance], notBuilt: []);

    /// <summary>Every mode name, built or not (what --mode and the config file's mode accept as a name).</summary>
    public static IReadOnlyList<string> Known => Registry.Known;

    /// <summary>The names of the modes this build has.</summary>
    public static IReadOnlyList<string> Built => Registry.BuiltNames;

    /// <summary>Null when the mode can run; otherwise the one-line reason.</summary>
    public static string? Problem(string mode) => Registry.Problem(mode);

    /// <summary>As <see cref="Problem(string)"/>, for a mode given by a config file field (<paramref name="source"/> is <c>file:line: mode</c>).</summary>
    public static string? Problem(string mode, string source) => Registry.Problem(mode, source);

    /// <summary>Null when this node's kernel can run the built mode <paramref name="mode"/>; otherwise the one-line reason.</summary>
    public static Task<string?> KernelProblemAsync(string mode, CancellationToken cancellationToken) =>
        Require(mode).KernelProblemAsync(cancellationToken);

    /// <summary>The built mode <paramref name="mode"/>; a <see cref="UsageException"/> with the one-line reason otherwise.</summary>
    public static IProxyMode Require(string mode) =>
        Registry.Find(mode) ?? throw new UsageException(Registry.Problem(mode)!);

    /// <summary>
    /// The data plane of a built mode, after its kernel check (a <see cref="UsageException"/> with the
    /// mode's one line when this kernel cannot run it).
    /// </summary>
    public static async Task<ProxyModeBackend> CreateAsync(string mode, ProxyModeOptions options, ProxyMetrics metrics, ILogger logger, CancellationToken cancellationToken)
    {
        var descriptor = Require(mode);
        if (await descriptor.KernelProblemAsync(cancellationToken) is { } missing) throw new UsageException(missing);
        return await descriptor.CreateAsync(options, metrics, logger, cancellationToken);
    }
}
