using System.Net;
using System.Net.Sockets;
using System.Text;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Iptables;
using ProxyPlanes.Model;
using ProxyPlanes.Netlink;
using ProxyPlanes.NodeTools;

namespace ProxyPlanes.Backends.Ipvs;

/// <summary>
/// An in-memory IPVS kernel for tests: the link and its addresses, the IPVS table, ipsets and the
/// iptables tables of each family (a <see cref="FakeIptables"/> per family). It refuses what the kernel and the tools refuse (a virtual
/// server added twice, a destination of a missing virtual server or of another family, an address
/// on a missing link, an entry of the wrong shape for its set, a rule jumping to a missing chain or
/// matching a missing set, destroying a set a rule still uses, ...), with the errno the kernel uses.
/// Like the kernel, it applies operations one by one and stops at the first refused.
/// </summary>
public sealed class FakeIpvsKernel : IIpvsKernel
{
    private readonly object _gate = new();
    private readonly SortedSet<IPAddress> _addresses = new(IpvsText.AddressComparer);
    private readonly SortedDictionary<VirtualServerKey, (VirtualServer Definition, SortedDictionary<RealServerKey, KernelDestination> Destinations)> _services = [];
    // Each set's entries as ipset saves them, and the same by key (an entry's key finds it at once, as in the kernel's hash).
    private readonly SortedDictionary<string, (string Type, IpFamily? Family, SortedSet<string> Entries, bool Comments, Dictionary<string, string> ByKey)> _sets = new(StringComparer.Ordinal);
    private readonly Dictionary<IpFamily, FakeIptables> _iptables = [];

    public FakeIpvsKernel(params IPAddress[] nodeAddresses)
    {
        NodeAddresses = [.. nodeAddresses];
        foreach (var family in new[] { IpFamily.IPv4, IpFamily.IPv6 })
            _iptables[family] = new FakeIptables(family) { CheckRule = (_, _, rule) => CheckSets(rule, family) };
    }

    /// <summary>The node's own addresses (on other links than kube-ipvs0).</summary>
    public List<IPAddress> NodeAddresses { get; }

    public bool LinkExists { get; private set; }

    /// <summary>How many operations were applied (tests check what a partial sync sends).</summary>
    public int OperationsApplied { get; private set; }

    /// <summary>Test hook: an operation for which this returns true is refused (EIO), as if the kernel failed.</summary>
    public Func<IpvsOperation, bool>? Fail { get; set; }

    /// <summary>IPVS's connection timeouts; the kernel's defaults (tcp 900 s, tcpfin 120 s, udp 300 s) to start with.</summary>
    public IpvsTimeouts Timeouts { get; private set; } = new(900, 120, 300);

    /// <summary>Calls of <see cref="EnsureStrictArp"/>.</summary>
    public int StrictArpRequests { get; private set; }

    public Task<IpvsTimeouts> GetTimeoutsAsync(CancellationToken cancellationToken)
    {
        lock (_gate) return Task.FromResult(Timeouts);
    }

    /// <summary>As the kernel: 0 keeps a value; one above INT_MAX jiffies (at HZ=1000, 2,147,483 s) is refused (EINVAL).</summary>
    public Task SetTimeoutsAsync(IpvsTimeouts timeouts, CancellationToken cancellationToken)
    {
        const uint max = int.MaxValue / 1000;
        if (timeouts.TcpSeconds > max || timeouts.TcpFinSeconds > max || timeouts.UdpSeconds > max)
            throw new IpvsKernelException($"IPVS SET_CONFIG {timeouts}: Invalid argument (EINVAL)");
        lock (_gate)
        {
            Timeouts = new IpvsTimeouts(
                timeouts.TcpSeconds != 0 ? timeouts.TcpSeconds : Timeouts.TcpSeconds,
                timeouts.TcpFinSeconds != 0 ? timeouts.TcpFinSeconds : Timeouts.TcpFinSeconds,
                timeouts.UdpSeconds != 0 ? timeouts.UdpSeconds : Timeouts.UdpSeconds);
        }
        return Task.CompletedTask;
    }

    public IReadOnlyList<string> EnsureStrictArp(Microsoft.Extensions.Logging.ILogger logger)
    {
        StrictArpRequests++;
        return [];
    }

    /// <summary>Calls of <see cref="PrepareAsync"/>.</summary>
    public int Prepared { get; private set; }

    public Task PrepareAsync(IpvsPlannerOptions options, CancellationToken cancellationToken)
    {
        Prepared++;
        return Task.CompletedTask;
    }

    /// <summary>Test hook: connections on a destination, as IPVS counts them.</summary>
    public void SetConnections(VirtualServerKey service, RealServerKey destination, long active, long inactive)
    {
        lock (_gate)
        {
            var destinations = _services[service].Destinations;
            destinations[destination] = destinations[destination] with { ActiveConnections = active, InactiveConnections = inactive };
        }
    }

    public KernelDestination? Destination(VirtualServerKey service, RealServerKey destination)
    {
        lock (_gate)
            return _services.TryGetValue(service, out var s) ? s.Destinations.GetValueOrDefault(destination) : null;
    }

    public Task<IpvsKernelView> ReadAsync(IReadOnlyList<IpFamily> families, CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            var view = new IpvsKernelView
            {
                LinkExists = LinkExists,
                LinkAddresses = _addresses.ToList(),
                NodeAddresses = NodeAddresses.ToList(),
                Services = _services.ToDictionary(s => s.Key, s => new KernelVirtualServer(s.Value.Definition, s.Value.Destinations.Values.ToList())),
                Ipsets = _sets.Where(s => IpvsNames.IsOurSet(s.Key)).ToDictionary(s => s.Key, s => (IReadOnlySet<string>)s.Value.Entries.ToHashSet()),
                BuiltInRules = families.ToDictionary(f => f, f => new BuiltInRules(BuiltIn(f, "nat"), BuiltIn(f, "filter"))),
            };
            return Task.FromResult(view);
        }
    }

    private HashSet<string> BuiltIn(IpFamily family, string table) =>
        IptablesSave.ParseTable(_iptables[family].Save(table)).BuiltInRules.ToHashSet(StringComparer.Ordinal);

    public Task<IReadOnlyDictionary<VirtualServerKey, IReadOnlyList<KernelDestination>>> ReadDestinationsAsync(IReadOnlyCollection<VirtualServerKey> servers, CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            // As the kernel's GET_DEST dump: a missing service is an empty list, not an error.
            IReadOnlyDictionary<VirtualServerKey, IReadOnlyList<KernelDestination>> result = servers
                .ToDictionary(k => k, k => _services.TryGetValue(k, out var service) ? (IReadOnlyList<KernelDestination>)[.. service.Destinations.Values] : []);
            return Task.FromResult(result);
        }
    }

    public Task<bool> ServiceExistsAsync(VirtualServerKey server, CancellationToken cancellationToken)
    {
        lock (_gate) return Task.FromResult(_services.ContainsKey(server));
    }

    public Task<bool> LinkExistsAsync(CancellationToken cancellationToken)
    {
        lock (_gate) return Task.FromResult(LinkExists);
    }

    public Task<string> SaveIptablesAsync(IpFamily family, string table, CancellationToken cancellationToken)
    {
        lock (_gate) return Task.FromResult(_iptables[family].Save(table));
    }

    public Task ApplyAsync(IReadOnlyList<IpvsOperation> operations, CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            foreach (var operation in operations)
            {
                if (Fail?.Invoke(operation) == true) throw Refused(operation, "Input/output error (EIO)");
                Apply(operation);
                OperationsApplied++;
            }
        }
        return Task.CompletedTask;
    }

    private void Apply(IpvsOperation operation)
    {
        switch (operation)
        {
            case CreateLink:
                if (LinkExists) throw Refused(operation, "File exists (EEXIST)");
                LinkExists = true;
                break;
            case DeleteLink:
                if (!LinkExists) throw Refused(operation, "No such device (ENODEV)");
                LinkExists = false;
                _addresses.Clear();
                break;
            case AddAddress add:
                if (!LinkExists) throw Refused(operation, "No such device (ENODEV)");
                if (!_addresses.Add(add.Address)) throw Refused(operation, "File exists (EEXIST)");
                break;
            case DeleteAddress delete:
                if (!_addresses.Remove(delete.Address)) throw Refused(operation, "Cannot assign requested address (EADDRNOTAVAIL)");
                break;
            case AddService add:
                if (!IpvsSchedulers.Known.Contains(add.Server.Scheduler)) throw Refused(operation, "No such file or directory (ENOENT)");
                if (!_services.TryAdd(add.Server.Key, (add.Server, new SortedDictionary<RealServerKey, KernelDestination>()))) throw Refused(operation, "File exists (EEXIST)");
                break;
            case EditService edit:
                if (!_services.TryGetValue(edit.Server.Key, out var edited)) throw Refused(operation, "No such process (ESRCH)");
                _services[edit.Server.Key] = (edit.Server, edited.Destinations);
                break;
            case DeleteService delete:
                if (!_services.Remove(delete.Key)) throw Refused(operation, "No such process (ESRCH)");
                break;
            case AddDestination add:
            {
                if (!_services.TryGetValue(add.Service, out var service)) throw Refused(operation, "No such process (ESRCH)");
                if (FamilyOf(add.Destination.Address) != add.Service.Family) throw Refused(operation, "Invalid argument (EINVAL)");
                if (!service.Destinations.TryAdd(add.Destination, new KernelDestination(add.Destination, add.Weight))) throw Refused(operation, "File exists (EEXIST)");
                break;
            }
            case EditDestination edit:
            {
                if (!_services.TryGetValue(edit.Service, out var service)) throw Refused(operation, "No such process (ESRCH)");
                if (!service.Destinations.TryGetValue(edit.Destination, out var destination)) throw Refused(operation, "No such file or directory (ENOENT)");
                service.Destinations[edit.Destination] = destination with { Weight = edit.Weight, ForwardMethod = 0 };
                break;
            }
            case DeleteDestination delete:
            {
                if (!_services.TryGetValue(delete.Service, out var service)) throw Refused(operation, "No such process (ESRCH)");
                if (!service.Destinations.Remove(delete.Destination)) throw Refused(operation, "No such file or directory (ENOENT)");
                break;
            }
            case IpsetRestore restore:
                RestoreIpsets(restore);
                break;
            case IptablesRestore restore:
                RestoreIptables(restore);
                break;
            default:
                throw new ArgumentException($"unknown operation {operation.GetType().Name}");
        }
    }

    private static IpFamily FamilyOf(IPAddress address) => Model.NodeAddresses.FamilyOf(address);

    private static IpvsKernelException Refused(IpvsOperation operation, string error) =>
        new($"{operation.ToString().Split('\n')[0]}: {error}");

    // ------------------------------------------------------------------ ipset

    private void RestoreIpsets(IpsetRestore restore)
    {
        var lineNumber = 0;
        foreach (var raw in restore.Script.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            lineNumber++;
            var words = raw.Split(' ', StringSplitOptions.RemoveEmptyEntries).ToList();
            var exist = words.Remove("-exist");
            IpvsKernelException Error(string message) => new($"ipset restore: line {lineNumber}: {message}: {raw}");
            switch (words[0])
            {
                case "create":
                {
                    var name = words[1];
                    var type = words[2];
                    IpFamily? family = words.IndexOf("family") is var i and >= 0 ? (words[i + 1] == "inet6" ? IpFamily.IPv6 : IpFamily.IPv4) : null;
                    if (name.Length > 31) throw Error("set name longer than 31 characters");
                    if (!type.StartsWith("bitmap:", StringComparison.Ordinal) && family is null) throw Error("a hash set needs a family");
                    var comments = words.Contains("comment");
                    if (_sets.TryGetValue(name, out var existing))
                    {
                        if (!exist || existing.Type != type || existing.Family != family || existing.Comments != comments) throw Error("Set cannot be created: set with the same name already exists");
                        break;
                    }
                    _sets[name] = (type, family, new SortedSet<string>(StringComparer.Ordinal), comments, new Dictionary<string, string>(StringComparer.Ordinal));
                    break;
                }
                case "add" or "del":
                {
                    if (!_sets.TryGetValue(words[1], out var set)) throw Error("The set with the given name does not exist");
                    var entry = words[2];
                    if (!ValidEntry(set.Type, set.Family, entry)) throw Error($"Syntax error: '{entry}' is not an entry of a {set.Type} set");
                    // As ipset: a comment only on add, only in a set created with comments; the key identifies the entry.
                    var rest = words.Skip(3).ToList();
                    if (rest.Count > 0 && (words[0] != "add" || !set.Comments || rest[0] != "comment" || rest.Count < 2))
                        throw Error($"Syntax error: Unknown argument: '{rest[0]}'");
                    var existingEntry = set.ByKey.GetValueOrDefault(entry);
                    if (words[0] == "add")
                    {
                        if (existingEntry is not null && !exist) throw Error("Element cannot be added to the set: it's already added");
                        if (existingEntry is not null) set.Entries.Remove(existingEntry);
                        var added = string.Join(' ', words.Skip(2));
                        set.Entries.Add(added);
                        set.ByKey[entry] = added;
                    }
                    else if (existingEntry is null) { if (!exist) throw Error("Element cannot be deleted from the set: it's not added"); }
                    else
                    {
                        set.Entries.Remove(existingEntry);
                        set.ByKey.Remove(entry);
                    }
                    break;
                }
                case "flush":
                    if (!_sets.TryGetValue(words[1], out var flushed)) throw Error("The set with the given name does not exist");
                    flushed.Entries.Clear();
                    flushed.ByKey.Clear();
                    break;
                case "destroy":
                    if (!_sets.ContainsKey(words[1])) { if (exist) break; throw Error("The set with the given name does not exist"); }
                    if (AllRules().Any(r => MatchSets(r).Contains(words[1])))
                        throw Error("Set cannot be destroyed: it is in use by a kernel component");
                    _sets.Remove(words[1]);
                    break;
                default:
                    throw Error("unknown command");
            }
        }
    }

    private static bool ValidEntry(string type, IpFamily? family, string entry)
    {
        bool Ip(string text) => IPAddress.TryParse(text, out var ip) && (family is null || FamilyOf(ip) == family);
        bool Port(string text) => int.TryParse(text, out var port) && port is >= 0 and <= 65535;
        bool ProtoPort(string text) => text.Split(':') is [var proto, var port] && proto is "tcp" or "udp" or "sctp" && Port(port);
        bool Net(string text) => text.Split('/') is [var ip] ? Ip(ip) : text.Split('/') is [var address, var length] && Ip(address) && int.TryParse(length, out var l) && l is >= 0 and <= 128;
        var parts = entry.Split(',');
        return type switch
        {
            "hash:ip" => parts is [var ip] && Ip(ip),
            "hash:ip,port" => parts is [var ip, var pp] && Ip(ip) && ProtoPort(pp),
            "hash:ip,port,ip" => parts is [var ip, var pp, var ip2] && Ip(ip) && ProtoPort(pp) && Ip(ip2),
            "hash:ip,port,net" => parts is [var ip, var pp, var net] && Ip(ip) && ProtoPort(pp) && Net(net),
            "bitmap:port" => parts is [var port] && Port(port),
            _ => false,
        };
    }

    private static IEnumerable<string> MatchSets(string rule)
    {
        var words = rule.Split(' ');
        for (var i = 0; i + 1 < words.Length; i++)
            if (words[i] == "--match-set") yield return words[i + 1];
    }

    // ------------------------------------------------------------------ iptables

    private void RestoreIptables(IptablesRestore restore)
    {
        try
        {
            _iptables[restore.Family].Restore(restore.Script);
        }
        catch (CommandException e)
        {
            throw new IpvsKernelException(e.Message, e);
        }
    }

    /// <summary>Every rule of both families and tables (the sets they match are in use).</summary>
    private IEnumerable<string> AllRules() =>
        _iptables.Values.SelectMany(f => new[] { "filter", "nat" }.SelectMany(t => IptablesSave.ParseTables(f.Save(t))))
            .SelectMany(t => t.Rules.Values.SelectMany(r => r));

    /// <summary>A rule may match only sets that exist, of its own family.</summary>
    private string? CheckSets(string rule, IpFamily family)
    {
        foreach (var set in MatchSets(rule))
        {
            if (!_sets.TryGetValue(set, out var s)) return $"Set {set} doesn't exist";
            if (s.Family is { } f && f != family) return $"Set {set} is of the other family";
        }
        return null;
    }

    // ------------------------------------------------------------------ dump

    /// <summary>
    /// Everything the fake holds, in a fixed order, without connection counts: two fakes programmed
    /// into the same state dump the same text.
    /// </summary>
    public string Dump()
    {
        lock (_gate)
        {
            var text = new StringBuilder();
            text.Append($"link {(LinkExists ? IpvsNames.Link : "-")}\n");
            foreach (var address in _addresses) text.Append($"address {address}\n");
            foreach (var (key, (definition, destinations)) in _services)
            {
                text.Append($"-A {key.IpvsadmService} {definition.IpvsadmOptions}\n");
                foreach (var destination in destinations.Values) text.Append($"-a {key.IpvsadmService} -r {destination.Key} -m -w {destination.Weight}\n");
            }
            foreach (var (name, (type, family, entries, _, _)) in _sets)
            {
                text.Append($"set {name} {type} {family}\n");
                foreach (var entry in entries) text.Append($"  {entry}\n");
            }
            foreach (var (family, iptables) in _iptables.OrderBy(t => t.Key))
                foreach (var table in new[] { "filter", "nat" })
                    text.Append($"# {family}\n").Append(iptables.Save(table));
            return text.ToString();
        }
    }

    /// <summary>Test hook: a destination deleted behind the proxy's back (as <c>ipvsadm -d</c> would).</summary>
    public void RemoveDestinationBehindTheBack(VirtualServerKey service, RealServerKey destination)
    {
        lock (_gate) _services[service].Destinations.Remove(destination);
    }

    /// <summary>Virtual servers in the fake (tests).</summary>
    public IReadOnlyList<VirtualServerKey> Services
    {
        get { lock (_gate) return _services.Keys.ToList(); }
    }

    /// <summary>The entries of one set; null when there is no such set.</summary>
    public IReadOnlyCollection<string>? SetEntries(string name)
    {
        lock (_gate) return _sets.TryGetValue(name, out var set) ? set.Entries.ToList() : null;
    }

    /// <summary>Addresses on kube-ipvs0.</summary>
    public IReadOnlyCollection<IPAddress> LinkAddresses
    {
        get { lock (_gate) return _addresses.ToList(); }
    }

    internal static bool IsIPv6(IPAddress address) => address.AddressFamily == AddressFamily.InterNetworkV6;
}
