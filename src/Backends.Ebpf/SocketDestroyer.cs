using Microsoft.Extensions.Logging;
using ProxyPlanes.Model;
using ProxyPlanes.NodeTools.Conntrack;

namespace ProxyPlanes.Backends.Ebpf;

/// <summary>
/// The connected UDP sockets a sync left on a gone backend, destroyed (bpf/sockdestroy.c: an <c>iter/udp</c>
/// program calling the <c>bpf_sock_destroy</c> kfunc, kernel ≥ 6.5). connect4/connect6 pick a connected socket's
/// backend once; without this such a socket talks to a gone endpoint for its whole life. The deletions are the ones
/// the other modes hand to <c>conntrack -D</c> (<see cref="StaleConntrackPlanner"/>), UDP only: a socket goes when
/// the hooks connected it to a removed endpoint of that frontend, or to any backend of a frontend that is gone. The
/// application's next receive fails with ECONNABORTED and its next connect goes through the hooks again.
/// </summary>
/// <remarks>
/// An iterator walks the sockets of the network namespace it is created in (BPF_ITER_CREATE), so a pass runs in
/// each namespace it is given, on a thread that enters it (<see cref="Interop.InNetworkNamespace"/>): the daemon's
/// and every named one (<see cref="NamedNamespaces"/>, where container runtimes pin pods' namespaces), as Cilium's
/// socket termination walks the host's and every pod's.
/// </remarks>
public sealed class SocketDestroyer : IDisposable
{
    public const string ObjectName = "sockdestroy";
    public const string ProgramName = "pp_sock_destroy_udp";

    /// <summary>Where <c>ip netns</c>, containerd and CRI-O pin network namespaces.</summary>
    public const string NamedNamespaceDirectory = "/var/run/netns";

    private const int CookieSize = sizeof(ulong);

    private readonly BpfObject _object;
    private readonly SafeBpfHandle _link;

    private SocketDestroyer(BpfObject bpfObject, SafeBpfHandle link)
    {
        _object = bpfObject;
        _link = link;
        Deletions = bpfObject.Map(MapLayout.SockDeletionsMap);
    }

    /// <summary>pp_sockdel_v1: the {frontend, backend} pairs of the pass running now; empty between passes.</summary>
    public BpfMap Deletions { get; }

    /// <summary>
    /// Loads bpf/sockdestroy.c with the socket hooks' reverse maps (<paramref name="sockMaps"/>: sock.o's maps, of
    /// which it takes <c>pp_revnat4_v1</c> and <c>pp_revnat6_v1</c>) and makes its iterator link. Throws a
    /// <see cref="BpfException"/> on a kernel without the kfunc or the UDP iterator.
    /// </summary>
    public static SocketDestroyer Load(IEnumerable<BpfMap> sockMaps)
    {
        var bpfObject = BpfObject.LoadEmbedded(ObjectName, sharedMaps: sockMaps);
        try
        {
            return new SocketDestroyer(bpfObject, bpfObject.Program(ProgramName).AttachIterator());
        }
        catch
        {
            bpfObject.Dispose();
            throw;
        }
    }

    /// <summary>
    /// <see cref="Load"/>, or null on a kernel that cannot (before 6.5: no <c>bpf_sock_destroy</c>), said in one
    /// info line: the detection happens once, at start.
    /// </summary>
    public static SocketDestroyer? TryLoad(IEnumerable<BpfMap> sockMaps, ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(logger);
        try
        {
            return Load(sockMaps);
        }
        catch (BpfException e)
        {
            logger.LogInformation(
                "eBPF: connected UDP sockets of a removed endpoint are not destroyed on this kernel (needs the bpf_sock_destroy kfunc and iter/udp, kernel 6.5 or later): {Error}",
                e.Message.Split('\n')[0]);
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

    /// <summary>The network namespaces pinned under <see cref="NamedNamespaceDirectory"/> (none when it does not exist).</summary>
    public static IReadOnlyList<string> NamedNamespaces() =>
        Directory.Exists(NamedNamespaceDirectory) ? [.. Directory.GetFiles(NamedNamespaceDirectory).Order(StringComparer.Ordinal)] : [];

    /// <summary>
    /// Destroys, in each of <paramref name="namespaces"/> (nsfs files, e.g. <c>/proc/self/ns/net</c> or
    /// <c>/var/run/netns/NAME</c>), the connected UDP sockets <paramref name="deletions"/> name, and returns how many
    /// it destroyed. A named namespace (<see cref="NamedNamespaceDirectory"/>) gone meanwhile is skipped; the first other failure is thrown after every namespace
    /// had its pass. pp_sockdel_v1 is empty again afterwards, whatever happened.
    /// </summary>
    public int Destroy(IReadOnlyList<ConntrackDeletion> deletions, IEnumerable<string> namespaces)
    {
        ArgumentNullException.ThrowIfNull(deletions);
        ArgumentNullException.ThrowIfNull(namespaces);
        var keys = deletions.Select(KeyFor).OfType<SockDeleteKey>().Distinct().ToList();
        if (keys.Count == 0) return 0;
        var destroyed = 0;
        BpfException? failure = null;
        try
        {
            foreach (var key in keys) Deletions.Update(key, 0u);
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
                        Interop.InNetworkNamespace((int)fd.Fd, () => destroyed += RunHere());
                    }
                    catch (BpfException e)
                    {
                        failure ??= new BpfException(e.Errno, $"destroy UDP sockets in network namespace {path}: {e.Operation}");
                    }
                }
            }
        }
        finally
        {
            foreach (var key in keys) Deletions.Delete(key);
        }
        if (failure is not null) throw failure;
        return destroyed;
    }

    /// <summary>One pass of the iterator over the calling thread's network namespace; the program writes each destroyed socket's cookie.</summary>
    private int RunHere()
    {
        using var link = _link.Borrow();
        var attributes = new BpfIterCreateAttributes { LinkFd = link.Fd };
        using var iterator = new SafeBpfHandle(Interop.CheckedBpf(BpfCommand.BPF_ITER_CREATE, ref attributes, $"iterator {ProgramName}"));
        return (int)(Interop.ReadToEnd(iterator, $"iterator {ProgramName}") / CookieSize);
    }

    public void Dispose()
    {
        _link.Dispose();
        _object.Dispose();
    }
}
