using System.Runtime.InteropServices;
using System.Text;
using Microsoft.Extensions.Logging;

namespace ProxyPlanes.Backends.Ebpf;

/// <summary>
/// The service port names of the master entries, for <c>proxyplanes explain</c>: the maps the programs read
/// carry none, as IPVS keeps none (IPVS mode fills the <c>KUBE-IPVS-NAMES</c> ipset for this). Here it is a
/// map the programs never read, <c>pp_names_v1</c> (hash: rev_nat_id → <c>ns/name:port</c>, NUL-padded
/// UTF-8 of <see cref="NameBytes"/>), pinned beside the others so it lives and dies with them (bpffs holds
/// pins only, no files). The backend writes it after each plan (<see cref="Write"/>); a master entry's id is
/// reused only by a new master, whose name is then written over the old one.
/// </summary>
public static unsafe class EbpfNames
{
    public const string MapName = "pp_names_v1";
    public const int NameBytes = 64;
    private const int MaxEntries = 65536;

    /// <summary>The pinned map under <paramref name="pinDirectory"/>, created and pinned when it is not there.</summary>
    public static BpfMap OpenOrCreate(string pinDirectory)
    {
        var pin = Path.Combine(pinDirectory, MapName);
        if (File.Exists(pin)) return BpfMap.OpenPinned(pin);
        var attributes = new MapCreateAttributes { MapType = 1 /* BPF_MAP_TYPE_HASH */, KeySize = 4, ValueSize = NameBytes, MaxEntries = MaxEntries };
        var name = Encoding.ASCII.GetBytes(MapName);
        for (var i = 0; i < name.Length; i++) attributes.MapName[i] = name[i];
        var fd = Interop.CheckedBpf((BpfCommand)0 /* BPF_MAP_CREATE */, ref attributes, MapName);
        var map = BpfMap.FromHandle(new SafeBpfHandle(fd));
        try
        {
            map.Pin(pin);
        }
        catch
        {
            map.Dispose();
            throw;
        }
        return map;
    }

    /// <summary>
    /// The name of every master entry <paramref name="plan"/> writes, in one BPF_MAP_UPDATE_BATCH (a cold sync names
    /// 10,000 masters: one syscall instead of one each; single updates where the kernel has no batch); a name longer than
    /// <see cref="NameBytes"/> is cut. A refusal throws a <see cref="BpfException"/>.
    /// </summary>
    public static void Write(BpfMap names, EbpfPlan plan)
    {
        ArgumentNullException.ThrowIfNull(names);
        ArgumentNullException.ThrowIfNull(plan);
        var masters = 0;
        foreach (var write in plan.Writes)
            if (write is ServiceUpdate { Key.Slot: 0 }) masters++;
        if (masters == 0) return;
        var ids = new uint[masters];
        var values = new NameValue[masters];
        var i = 0;
        foreach (var write in plan.Writes)
        {
            if (write is not ServiceUpdate { Key.Slot: 0 } master) continue;
            ids[i] = master.Value.RevNatId;
            Encode(master.Owner.ToString(), values[i]);
            i++;
        }
        names.UpdateBatch<uint, NameValue>(ids, values, out var refused);
        if (refused is not null) throw refused;
    }

    /// <summary><paramref name="name"/> as UTF-8 into <paramref name="value"/> (zeroed), cut at <see cref="NameBytes"/>.</summary>
    private static void Encode(string name, Span<byte> value)
    {
        if (Encoding.UTF8.GetByteCount(name) <= NameBytes) Encoding.UTF8.GetBytes(name, value);
        else Encoding.UTF8.GetBytes(name).AsSpan(0, NameBytes).CopyTo(value);
    }

    /// <summary>A value of <c>pp_names_v1</c>: <see cref="NameBytes"/> bytes, NUL-padded.</summary>
    [System.Runtime.CompilerServices.InlineArray(NameBytes)]
    private struct NameValue
    {
        private byte _first;
    }

    /// <summary>
    /// The plan's names into the pinned map under <paramref name="pinDirectory"/>, opened for this one call (tests, a
    /// one-off writer); the backend keeps an <see cref="EbpfNamesWriter"/>. A refusal is a warning.
    /// </summary>
    public static void TryWrite(string pinDirectory, EbpfPlan plan, ILogger logger)
    {
        using var writer = new EbpfNamesWriter(pinDirectory, logger);
        writer.Write(plan);
    }

    /// <summary>Writes <paramref name="name"/> for <paramref name="revNatId"/> (tests, and what <see cref="Write"/> does per master).</summary>
    public static void Set(BpfMap names, uint revNatId, string name)
    {
        ArgumentNullException.ThrowIfNull(names);
        ArgumentNullException.ThrowIfNull(name);
        Span<byte> value = stackalloc byte[NameBytes];
        Encode(name, value);
        names.Update(MemoryMarshal.AsBytes(new ReadOnlySpan<uint>(in revNatId)), value);
    }

    /// <summary>Every name in the pinned map; empty when it is not pinned (a daemon that does not write names).</summary>
    public static IReadOnlyDictionary<uint, string> Read(string pinDirectory)
    {
        var names = new Dictionary<uint, string>();
        var pin = Path.Combine(pinDirectory, MapName);
        if (!File.Exists(pin)) return names;
        using var map = BpfMap.OpenPinned(pin);
        if (map.KeySize != 4 || map.ValueSize != NameBytes) return names;
        Span<byte> value = stackalloc byte[NameBytes];
        foreach (var id in map.Keys<uint>())
        {
            var key = id;
            if (!map.TryLookup(MemoryMarshal.AsBytes(new ReadOnlySpan<uint>(in key)), value)) continue;
            var end = value.IndexOf((byte)0);
            names[id] = Encoding.UTF8.GetString(end < 0 ? value : value[..end]);
        }
        return names;
    }

    /// <summary>union bpf_attr, as BPF_MAP_CREATE reads it (up to map_name).</summary>
    [StructLayout(LayoutKind.Sequential)]
    private struct MapCreateAttributes
    {
        public uint MapType;
        public uint KeySize;
        public uint ValueSize;
        public uint MaxEntries;
        public uint MapFlags;
        public uint InnerMapFd;
        public uint NumaNode;
        public fixed byte MapName[16];
    }
}

/// <summary>
/// What the backend calls once per applied plan (after the plan's writes): the plan's names into <c>pp_names_v1</c>,
/// through an fd held between syncs (opening the pin on every sync was a fifth of a single change's cost at 10,000
/// services). Each full sync opens the pin again, and creates and pins a new map when it went. Names serve
/// <c>explain</c> only, so a refusal is a warning, never a failed sync; the next sync opens the map again.
/// </summary>
public sealed class EbpfNamesWriter(string pinDirectory, ILogger logger) : IDisposable
{
    private BpfMap? _map;

    public void Write(EbpfPlan plan)
    {
        ArgumentNullException.ThrowIfNull(plan);
        try
        {
            if (plan.Full || _map is null)
            {
                Close();
                _map = EbpfNames.OpenOrCreate(pinDirectory);
            }
            EbpfNames.Write(_map, plan);
        }
        catch (BpfException e)
        {
            Close();
            logger.LogWarning("eBPF: the service port names for explain were not written ({Problem}); explain shows no name for them", e.Message.Split('\n')[0]);
        }
    }

    public void Dispose() => Close();

    private void Close()
    {
        _map?.Dispose();
        _map = null;
    }
}
