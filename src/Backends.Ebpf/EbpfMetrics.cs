using Prometheus;
using ProxyPlanes.Metrics;

namespace ProxyPlanes.Backends.Ebpf;

/// <summary>
/// The eBPF-only metrics, registered by this data plane on the shared <see cref="ProxyMetrics.Registry"/>
/// (so they appear in <c>--mode=ebpf</c> only): map entries after the last sync, map writes the kernel
/// refused, connected UDP sockets destroyed.
/// </summary>
public sealed class EbpfMetrics
{
    public const string MapEntries = "proxyplanes_ebpf_map_entries";
    public const string MapUpdateFailuresTotal = "proxyplanes_ebpf_map_update_failures_total";
    public const string SocketsDestroyedTotal = "proxyplanes_ebpf_sockets_destroyed_total";

    private readonly Gauge _entries;
    private readonly Counter _failures;
    private readonly Counter _destroyed;

    public EbpfMetrics(ProxyMetrics metrics)
    {
        ArgumentNullException.ThrowIfNull(metrics);
        var factory = metrics.Factory;
        _entries = factory.CreateGauge(MapEntries, "Entries in the eBPF data plane's maps after the last sync, by map", ["map"]);
        _failures = factory.CreateCounter(MapUpdateFailuresTotal, "Map writes (updates and deletes) the kernel refused, by map", ["map"]);
        // Present from the start, so a scrape before the first failure shows 0.
        _failures.WithLabels(MapLayout.ServicesMap);
        _failures.WithLabels(MapLayout.BackendsMap);
        _destroyed = factory.CreateCounter(SocketsDestroyedTotal, "Connected UDP sockets of a removed endpoint, and sockets a Drop verdict left on a VIP that got endpoints, destroyed after a sync (bpf_sock_destroy, or sock_diag SOCK_DESTROY before kernel 6.5)");
    }

    public void SetEntries(int services, int backends)
    {
        _entries.WithLabels(MapLayout.ServicesMap).Set(services);
        _entries.WithLabels(MapLayout.BackendsMap).Set(backends);
    }

    public void UpdateFailed(string map) => _failures.WithLabels(map).Inc();

    public void SocketsDestroyed(int count) => _destroyed.Inc(count);
}
