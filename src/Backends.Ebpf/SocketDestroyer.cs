using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using ProxyPlanes.Model;
using ProxyPlanes.Netlink;
using ProxyPlanes.NodeTools.Conntrack;

namespace ProxyPlanes.Backends.Ebpf;

/// <summary>
/// The connected UDP sockets a sync left on a gone backend, destroyed (bpf/sockdestroy.c: an <c>iter/udp</c>
/// program calling the <c>bpf_sock_destroy</c> kfunc, kernel ≥ 6.5). connect4/connect6 pick a connected socket's
/// backend once; without this such a socket talks to a gone endpoint for its whole life. The deletions are the ones
/// the other modes hand to <c>conntrack -D</c> (<see cref="StaleConntrackPlanner"/>), UDP only: a socket goes when
/// the hooks connected it to a removed endpoint of that frontend, or to any backend of a frontend that is gone. The
/// application's next receive fails with ECONNABORTED and its next connect goes through the hooks again.
/// The same pass (and an <c>iter/tcp</c> one) destroys the sockets a Drop verdict left on a VIP once a sync took that
/// frontend out of Drop (<see cref="ReopenedFrontends"/>): a TCP socket still in SYN_SENT to it, a UDP socket connected
/// to it. Nothing rewrites a socket's destination after connect, so without this such a TCP socket retransmits its SYN
/// to the VIP until connect times out; destroyed, connect fails with ECONNABORTED at once and a retry gets a backend.
/// On a kernel without the kfunc (before 6.5) the same sockets are chosen in user space and destroyed with sock_diag
/// SOCK_DESTROY (SocketDestroyer.SockDiag.cs, <see cref="LoadSockDiag"/>), as Cilium falls back there.
/// </summary>
/// <remarks>
/// An iterator walks the sockets of the network namespace it is created in (BPF_ITER_CREATE), so a pass runs in
/// each namespace it is given, on a thread that enters it (<see cref="Interop.InNetworkNamespace"/>): the daemon's
/// and every named one (<see cref="NamedNamespaces"/>, where container runtimes pin pods' namespaces), as Cilium's
/// socket termination walks the host's and every pod's.
/// </remarks>
public sealed partial class SocketDestroyer : IDisposable
{
    public const string ObjectName = "sockdestroy";
    public const string ProgramName = "pp_sock_destroy_udp";
    public const string TcpProgramName = "pp_sock_destroy_tcp";

    /// <summary>Where <c>ip netns</c>, containerd and CRI-O pin network namespaces.</summary>
    public const string NamedNamespaceDirectory = "/var/run/netns";

    private const int CookieSize = sizeof(ulong);

    // The iterator programs and their links; null in the sock_diag fallback (SocketDestroyer.SockDiag.cs).
    private readonly BpfObject? _object;
    private readonly SafeBpfHandle? _link;
    private readonly SafeBpfHandle? _tcpLink;

    private SocketDestroyer(BpfObject bpfObject, SafeBpfHandle link, SafeBpfHandle tcpLink)
    {
        _object = bpfObject;
        _link = link;
        _tcpLink = tcpLink;
        Deletions = bpfObject.Map(MapLayout.SockDeletionsMap);
        Reopened = bpfObject.Map(MapLayout.SockReopenedMap);
    }

    /// <summary>pp_sockdel_v1: the {frontend, backend} pairs of the pass running now; empty between passes. Null in the sock_diag fallback.</summary>
    public BpfMap? Deletions { get; }

    /// <summary>pp_sockvip_v1: the frontends taken out of Drop of the pass running now (master keys); empty between passes. Null in the sock_diag fallback.</summary>
    public BpfMap? Reopened { get; }

    /// <summary>
    /// Loads bpf/sockdestroy.c with the socket hooks' maps (<paramref name="sockMaps"/>: sock.o's maps, of which it
    /// takes the reverse maps <c>pp_revnat4_v1</c> / <c>pp_revnat6_v1</c> and the node addresses) and makes its two
    /// iterator links (UDP, TCP). Throws a <see cref="BpfException"/> on a kernel without the kfunc or the iterators.
    /// </summary>
    public static SocketDestroyer Load(IEnumerable<BpfMap> sockMaps)
    {
        var bpfObject = BpfObject.LoadEmbedded(ObjectName, sharedMaps: sockMaps);
        SafeBpfHandle? udp = null;
        try
        {
            udp = bpfObject.Program(ProgramName).AttachIterator();
            return new SocketDestroyer(bpfObject, udp, bpfObject.Program(TcpProgramName).AttachIterator());
        }
        catch
        {
            udp?.Dispose();
            bpfObject.Dispose();
            throw;
        }
    }

    /// <summary>
    /// <see cref="Load"/>; on a kernel that cannot (before 6.5: no <c>bpf_sock_destroy</c>), or with
    /// <paramref name="forceSockDiag"/>, the sock_diag fallback (<see cref="LoadSockDiag"/>, probed in the calling
    /// thread's network namespace), said in one info line; null when neither works, said in one info line too. The
    /// detection happens once, at start.
    /// </summary>
    public static SocketDestroyer? TryLoad(IEnumerable<BpfMap> sockMaps, ILogger logger, bool forceSockDiag = false)
    {
        ArgumentNullException.ThrowIfNull(sockMaps);
        ArgumentNullException.ThrowIfNull(logger);
        var maps = sockMaps.ToList();
        var kfunc = "not tried";
        if (!forceSockDiag)
        {
            try
            {
                return Load(maps);
            }
            catch (BpfException e)
            {
                kfunc = e.Message.Split('\n')[0];
            }
        }
        try
        {
            var fallback = LoadSockDiag(maps);
            logger.LogInformation(
                "eBPF: sockets are destroyed through sock_diag SOCK_DESTROY on this kernel (connected UDP sockets of a removed endpoint, sockets a Drop verdict left on a VIP that got endpoints), not by the bpf_sock_destroy kfunc (kernel 6.5 or later): {Error}",
                kfunc);
            return fallback;
        }
        catch (Exception e) when (e is NetlinkException or BpfException)
        {
            logger.LogInformation(
                "eBPF: connected UDP sockets of a removed endpoint are not destroyed on this kernel, nor sockets a Drop verdict left on a VIP that got endpoints (needs the bpf_sock_destroy kfunc, iter/udp and iter/tcp, kernel 6.5 or later, or sock_diag with CONFIG_INET_DIAG_DESTROY): {Error}; {Fallback}",
                kfunc, e.Message);
            return null;
        }
    }

    /// <summary>
    /// What pp_sockdel_v1 holds for <paramref name="deletion"/>, or null when it concerns no socket: not UDP (TCP is
    /// never planned; SCTP sockets are not walked), or a port that just got its first endpoints (its connects were
    /// refused, so no socket is connected through it).
    /// </summary>
    public static SockDeleteKey? KeyFor(ConntrackDeletion deletion)
    {
        ArgumentNullException.ThrowIfNull(deletion);
        if (deletion.Protocol != Protocol.UDP || deletion.Reason == ConntrackDeletionReason.ServiceNewlyActive) return null;
        var key = new SockDeleteKey { FrontendPort = MapLayout.NetworkPort(deletion.OriginalDestinationPort) };
        if (deletion.OriginalDestination is { } frontend) key.Frontend = MapAddress.For(frontend);
        if (deletion.ReplySource is { } backend)
        {
            key.Backend = MapAddress.For(backend);
            key.BackendPort = MapLayout.NetworkPort(deletion.ReplySourcePort);
        }
        return key;
    }

    /// <summary>
    /// The frontends <paramref name="writes"/> (a plan applied over <paramref name="previous"/>, the service entries
    /// before it) take out of Drop: internal-scope master entries (what local sockets ask) that had the drop flag and are
    /// written without it. Only these left sockets on a VIP: Reject refuses connect at once, Forward rewrites it. A
    /// partial plan touches only the changed ports, so this is as small as the change.
    /// </summary>
    public static IReadOnlyList<ServiceKey> ReopenedFrontends(ReadOnlySpan<MapWrite> writes, IReadOnlyDictionary<ServiceKey, ServiceValue> previous)
    {
        ArgumentNullException.ThrowIfNull(previous);
        if (previous.Count == 0) return []; // nothing was in Drop (a cold sync over empty maps): no walk over its writes
        var reopened = new List<ServiceKey>();
        foreach (var write in writes)
        {
            if (write is not ServiceUpdate { Key: { Slot: 0, Scope: MapLayout.ScopeInternal } key, Value: var value } ||
                (value.Flags & MapLayout.ServiceFlagDrop) != 0)
                continue;
            if (previous.TryGetValue(key, out var before) && (before.Flags & MapLayout.ServiceFlagDrop) != 0) reopened.Add(key);
        }
        return reopened;
    }

    /// <summary>The network namespaces pinned under <see cref="NamedNamespaceDirectory"/> (none when it does not exist).</summary>
    public static IReadOnlyList<string> NamedNamespaces() =>
        Directory.Exists(NamedNamespaceDirectory) ? [.. Directory.GetFiles(NamedNamespaceDirectory).Order(StringComparer.Ordinal)] : [];

    /// <summary>
    /// Destroys, in each of <paramref name="namespaces"/> (nsfs files, e.g. <c>/proc/self/ns/net</c> or
    /// <c>/var/run/netns/NAME</c>), the connected UDP sockets <paramref name="deletions"/> name and the sockets a Drop
    /// verdict left on one of <paramref name="reopened"/> (<see cref="ReopenedFrontends"/>: TCP in SYN_SENT, connected
    /// UDP), and returns how many it destroyed. The TCP pass runs only when a reopened frontend is TCP. A named namespace
    /// (<see cref="NamedNamespaceDirectory"/>) gone meanwhile is skipped; the first other failure is thrown after every
    /// namespace had its pass. pp_sockdel_v1 and pp_sockvip_v1 are empty again afterwards, whatever happened.
    /// </summary>
    public int Destroy(IReadOnlyList<ConntrackDeletion> deletions, IEnumerable<string> namespaces, IReadOnlyList<ServiceKey>? reopened = null)
    {
        ArgumentNullException.ThrowIfNull(deletions);
        ArgumentNullException.ThrowIfNull(namespaces);
        var keys = deletions.Select(KeyFor).OfType<SockDeleteKey>().Distinct().ToList();
        var frontends = (reopened ?? []).Where(k => k.Proto is (byte)ProtocolType.Tcp or (byte)ProtocolType.Udp).Distinct().ToList();
        if (keys.Count == 0 && frontends.Count == 0) return 0;
        var udp = keys.Count > 0 || frontends.Any(k => k.Proto == (byte)ProtocolType.Udp);
        var tcp = frontends.Any(k => k.Proto == (byte)ProtocolType.Tcp);
        var destroyed = 0;
        BpfException? failure = null;
        try
        {
            foreach (var key in keys) Deletions?.Update(key, 0u);
            foreach (var key in frontends) Reopened?.Update(key, 0u);
            foreach (var path in namespaces)
            {
                SafeBpfHandle networkNamespace;
                try
                {
                    networkNamespace = Interop.OpenReadOnly(path);
                }
                catch (BpfException e) when (e.Errno == 2 && path.StartsWith(NamedNamespaceDirectory + "/", StringComparison.Ordinal))
                {
                    continue; // the pod went meanwhile
                }
                using (networkNamespace)
                using (var fd = networkNamespace.Borrow())
                {
                    try
                    {
                        Interop.InNetworkNamespace((int)fd.Fd, () => destroyed += _object is null
                            ? DestroyHereBySockDiag(keys, frontends, udp, tcp)
                            : (udp ? RunHere(_link!, ProgramName) : 0) + (tcp ? RunHere(_tcpLink!, TcpProgramName) : 0));
                    }
                    catch (BpfException e)
                    {
                        failure ??= new BpfException(e.Errno, $"destroy sockets in network namespace {path}: {e.Operation}");
                    }
                    catch (NetlinkException e)
                    {
                        failure ??= new BpfException(e.Errno, $"destroy sockets in network namespace {path}: {e.Operation}", e.KernelMessage);
                    }
                }
            }
        }
        finally
        {
            foreach (var key in keys) Deletions?.Delete(key);
            foreach (var key in frontends) Reopened?.Delete(key);
        }
        if (failure is not null) throw failure;
        return destroyed;
    }

    /// <summary>One pass of an iterator over the calling thread's network namespace; the program writes each destroyed socket's cookie.</summary>
    private static int RunHere(SafeBpfHandle iteratorLink, string name)
    {
        using var link = iteratorLink.Borrow();
        var attributes = new BpfIterCreateAttributes { LinkFd = link.Fd };
        using var iterator = new SafeBpfHandle(Interop.CheckedBpf(BpfCommand.BPF_ITER_CREATE, ref attributes, $"iterator {name}"));
        return (int)(Interop.ReadToEnd(iterator, $"iterator {name}") / CookieSize);
    }

    public void Dispose()
    {
        _tcpLink?.Dispose();
        _link?.Dispose();
        _object?.Dispose();
    }
}
