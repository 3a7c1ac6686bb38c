using System.Globalization;
using System.Net;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;

namespace ProxyPlanes.Backends.Ebpf;

/// <summary>
/// <c>proxyplanes explain</c> for --mode=ebpf: opens the maps pinned under <c>&lt;bpffs&gt;/proxyplanes/</c>
/// (BPF_OBJ_GET, read only: lookups and key walks), reads them whole and traces the packet with
/// <see cref="EbpfTracer"/>. <c>explain</c> has no <c>--bpf-fs</c>: the bpf filesystem is found among this
/// process's mounts (the one holding <c>proxyplanes/pp_services_v2</c>); when several do (a test's private
/// bpffs beside the node's), the one a proxyplanes process in this network namespace was started with
/// (its <c>--bpf-fs</c>, else the default) wins.
/// </summary>
public sealed class EbpfExplainer : IKernelExplainer
{
    private readonly string? _bpfFs;

    /// <summary>The node's: the bpf filesystem is found (see the class).</summary>
    public EbpfExplainer()
    {
    }

    /// <summary>The pins under <paramref name="bpfFs"/>/proxyplanes (tests: a private bpffs).</summary>
    public EbpfExplainer(string bpfFs) => _bpfFs = bpfFs;

    /// <summary>
    /// Pins at the default place, or in the bpffs a proxyplanes process in this network namespace names: another
    /// namespace's (a test's private bpffs seen through the shared mount table) is not this node's state.
    /// </summary>
    public Task<bool> HoldsStateAsync(CancellationToken cancellationToken)
    {
        if (_bpfFs is not null) return Task.FromResult(File.Exists(ServicesPin(_bpfFs)));
        var candidates = Candidates();
        if (candidates.Count == 0) return Task.FromResult(false);
        var used = BpfFsOfProxiesInThisNetworkNamespace();
        used.Add(EbpfLocation.DefaultBpfFs);
        return Task.FromResult(candidates.Any(used.Contains));
    }

    public Task<PacketFate> ExplainAsync(PacketQuestion question, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(question);
        var bpfFs = Find();
        if (bpfFs is null)
            return Task.FromResult(new PacketFate(null, null, PacketVerdict.Pass, [], false, false,
                $"no pinned {MapLayout.ServicesMap} of ProxyPlanes on this node (no bpf filesystem holds {EbpfLocation.PinFolder}/{MapLayout.ServicesMap})", []));
        return Task.FromResult(EbpfTracer.Trace(Read(bpfFs), question, Node()));
    }

    public Task<IReadOnlyList<FrontendFate>> ListAsync(CancellationToken cancellationToken)
    {
        var bpfFs = Find();
        return Task.FromResult(bpfFs is null ? (IReadOnlyList<FrontendFate>)[] : EbpfTracer.List(Read(bpfFs), Node()));
    }

    /// <summary>The pinned maps' contents; a map that cannot be opened or read is one <see cref="ExplainException"/> line.</summary>
    public static EbpfSnapshot Read(string bpfFs)
    {
        var directory = Path.Combine(bpfFs, EbpfLocation.PinFolder);
        try
        {
            using var services = BpfMap.OpenPinned(Path.Combine(directory, MapLayout.ServicesMap));
            using var backends = BpfMap.OpenPinned(Path.Combine(directory, MapLayout.BackendsMap));
            var serviceEntries = new Dictionary<ServiceKey, ServiceValue>();
            foreach (var key in services.Keys<ServiceKey>())
                if (services.TryLookup<ServiceKey, ServiceValue>(key, out var value)) serviceEntries[key] = value;
            var backendEntries = new Dictionary<uint, Backend>();
            foreach (var id in backends.Keys<uint>())
                if (backends.TryLookup<uint, Backend>(id, out var backend)) backendEntries[id] = backend;

            HashSet<IPAddress>? nodeAddresses = null;
            var nodePin = Path.Combine(directory, MapLayout.NodeAddressesMap);
            if (File.Exists(nodePin))
            {
                using var nodes = BpfMap.OpenPinned(nodePin);
                nodeAddresses = nodes.Keys<uint>().Select(MapLayout.HostAddress).ToHashSet();
                var node6Pin = Path.Combine(directory, MapLayout.NodeAddresses6Map);
                if (File.Exists(node6Pin))
                {
                    using var nodes6 = BpfMap.OpenPinned(node6Pin);
                    nodeAddresses.UnionWith(nodes6.Keys<MapAddress>().Select(a => a.ToIPAddress()));
                }
            }
            List<SourceRange>? ranges = null;
            var rangePin = Path.Combine(directory, MapLayout.SourceRangesMap);
            if (File.Exists(rangePin))
            {
                using var map = BpfMap.OpenPinned(rangePin);
                ranges = [.. map.Keys<SourceRange4Key>().Select(SourceRange.From)];
                var range6Pin = Path.Combine(directory, MapLayout.SourceRanges6Map);
                if (File.Exists(range6Pin))
                {
                    using var map6 = BpfMap.OpenPinned(range6Pin);
                    ranges.AddRange(map6.Keys<SourceRange6Key>().Select(SourceRange.From));
                }
            }
            List<IpPrefix>? localSources = null;
            var localPin = Path.Combine(directory, MapLayout.LocalSourcesMap);
            if (File.Exists(localPin))
            {
                using var map = BpfMap.OpenPinned(localPin);
                localSources = [.. map.Keys<LocalSource4Key>().Select(k => k.Prefix)];
                var local6Pin = Path.Combine(directory, MapLayout.LocalSources6Map);
                if (File.Exists(local6Pin))
                {
                    using var map6 = BpfMap.OpenPinned(local6Pin);
                    localSources.AddRange(map6.Keys<LocalSource6Key>().Select(k => k.Prefix));
                }
            }
            return new EbpfSnapshot(serviceEntries, backendEntries, nodeAddresses, ranges, EbpfNames.Read(directory), localSources);
        }
        catch (BpfException e)
        {
            throw new ExplainException($"reading the pinned eBPF maps in {directory}: {e.Message.Split('\n')[0]}");
        }
    }

    private static string ServicesPin(string bpfFs) => Path.Combine(bpfFs, EbpfLocation.PinFolder, MapLayout.ServicesMap);

    private string? Find()
    {
        if (_bpfFs is not null) return File.Exists(ServicesPin(_bpfFs)) ? _bpfFs : null;
        var candidates = Candidates();
        if (candidates.Count <= 1) return candidates.FirstOrDefault();
        var used = BpfFsOfProxiesInThisNetworkNamespace();
        var chosen = candidates.Where(c => used.Contains(c)).ToList();
        if (chosen.Count == 1) return chosen[0];
        throw new ExplainException(
            $"several bpf filesystems hold pinned maps of ProxyPlanes ({string.Join(", ", candidates)}), and no single proxyplanes process in this network namespace names one with --bpf-fs");
    }

    /// <summary>The bpf file systems this process sees that hold our pinned services map.</summary>
    private static List<string> Candidates()
    {
        try
        {
            return EbpfLocation.MountPoints().Where(m => m.Type == "bpf").Select(m => m.Path).Distinct(StringComparer.Ordinal)
                .Where(path => File.Exists(ServicesPin(path))).ToList();
        }
        catch (IOException)
        {
            return [];
        }
    }

    /// <summary>The <c>--bpf-fs</c> (or its default) of every <c>proxyplanes run</c> process in this process's network namespace.</summary>
    private static HashSet<string> BpfFsOfProxiesInThisNetworkNamespace()
    {
        var found = new HashSet<string>(StringComparer.Ordinal);
        string own;
        try
        {
            own = new FileInfo("/proc/self/ns/net").LinkTarget ?? "";
        }
        catch (IOException)
        {
            return found;
        }
        foreach (var process in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(process), NumberStyles.None, CultureInfo.InvariantCulture, out _)) continue;
            try
            {
                if (new FileInfo(Path.Combine(process, "ns", "net")).LinkTarget != own) continue; // "net:[inode]", as readlink prints it
                var arguments = File.ReadAllText(Path.Combine(process, "cmdline")).Split('\0');
                if (!arguments.Contains("run") || !arguments.Any(a => a.Contains("proxyplanes", StringComparison.OrdinalIgnoreCase) || a.StartsWith("--mode", StringComparison.Ordinal))) continue;
                var bpfFs = EbpfLocation.DefaultBpfFs;
                for (var i = 0; i < arguments.Length; i++)
                {
                    if (arguments[i].StartsWith("--bpf-fs=", StringComparison.Ordinal)) bpfFs = arguments[i]["--bpf-fs=".Length..];
                    else if (arguments[i] == "--bpf-fs" && i + 1 < arguments.Length) bpfFs = arguments[i + 1];
                }
                found.Add(Path.TrimEndingDirectorySeparator(Path.GetFullPath(bpfFs)));
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // the process ended meanwhile, or is not ours to read
            }
        }
        return found;
    }

    private static TraceNode Node()
    {
        try
        {
            return new TraceNode(NodeAddresses.ReadLocalAddresses().ToHashSet());
        }
        catch (Exception e) when (e is IOException or System.Net.NetworkInformation.NetworkInformationException)
        {
            return new TraceNode(new HashSet<IPAddress>());
        }
    }
}
