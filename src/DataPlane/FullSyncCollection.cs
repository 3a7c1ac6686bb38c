using System.Diagnostics;
using System.Runtime;
using Microsoft.Extensions.Logging;
using ProxyPlanes.Model;

namespace ProxyPlanes.DataPlane;

/// <summary>
/// The blocking, compacting collections a backend runs around a full sync over a large table (docs/design.md, "A
/// compacting collection before a large full plan"): what the sync has just let go of is in gen2 (and the large object
/// heap) by then and would otherwise stay in the RSS until allocation pressure brings a gen2 collection. Each is logged
/// with the heap before and after and the pause, as one line: "{what}: heap B → A MiB, collected in P ms".
/// </summary>
public static class FullSyncCollection
{
    /// <summary>Before a full plan: every generation, compacted, so the plan reuses the memory of what was dropped.</summary>
    public static void BeforePlan(ILogger logger, string what) => Collect(logger, what, GCCollectionMode.Forced);

    /// <summary>
    /// After a full sync: every generation and the large object heap, compacted, the freed memory given back to the
    /// system. Deferred (<see cref="AfterSyncWork"/>) when the controller drives the sync: it then runs after the sync
    /// is reported, when the kernel is programmed and the backend's plan and batch, still referenced from its frames
    /// here, are garbage too; the sync's own time and log line do not carry the pause.
    /// </summary>
    public static void AfterSync(ILogger logger, string what)
    {
        if (!AfterSyncWork.TryDefer(nameof(AfterSync), () => CollectAfterSync(logger, what))) CollectAfterSync(logger, what);
    }

    private static void CollectAfterSync(ILogger logger, string what)
    {
        GCSettings.LargeObjectHeapCompactionMode = GCLargeObjectHeapCompactionMode.CompactOnce;
        Collect(logger, what, GCCollectionMode.Aggressive);
    }

    private static void Collect(ILogger logger, string what, GCCollectionMode mode)
    {
        var pause = Stopwatch.StartNew();
        var before = GC.GetTotalMemory(forceFullCollection: false);
        GC.Collect(GC.MaxGeneration, mode, blocking: true, compacting: true);
        logger.LogInformation("{What}: heap {Before} → {After} MiB, collected in {Pause:F1} ms",
            what, before >> 20, GC.GetTotalMemory(forceFullCollection: false) >> 20, pause.Elapsed.TotalMilliseconds);
    }
}
