using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Iptables;
using ProxyPlanes.Model;
using ProxyPlanes.Netlink;
using ProxyPlanes.NodeTools;

namespace ProxyPlanes.Backends.Ipvs;

/// <summary>How <see cref="IpvsKernel"/> reaches the kernel.</summary>
public sealed record IpvsKernelOptions
{
    /// <summary>Which iptables the node uses for the helper rules (<see cref="IptablesCommandApplier.DetectAsync"/>).</summary>
    public IptablesVariant IptablesVariant { get; init; } = IptablesVariant.Nft;

    /// <summary>
    /// Test only: a command that runs ipset and iptables elsewhere, e.g. <c>["ip", "netns", "exec", NAME]</c>
    /// to program a network namespace the test created. The proxy runs them in its own namespace.
    /// </summary>
    public IReadOnlyList<string> CommandPrefix { get; init; } = [];

    /// <summary>
    /// Test only: runs an action on a thread inside that same namespace; netlink sockets are opened
    /// and sysctls written there (see the sandbox's <c>NetworkNamespace.Run</c>).
    /// </summary>
    public Action<Action>? InNamespace { get; init; }
}

/// <summary>
/// The kernel side of the IPVS mode. The IPVS table and kube-ipvs0 with its addresses go over
/// netlink (<see cref="IpvsClient"/>, <see cref="RouteNetlink"/>; writes batched, every one
/// acknowledged); the helper ipsets and rules are restored with <c>ipset restore</c> and
/// <c>iptables-restore --noflush</c>, as kube-proxy does, except a partial sync's ipset entry
/// changes, which go over netlink too (<see cref="IpsetClient"/>).
/// </summary>
public sealed class IpvsKernel(IpvsKernelOptions? options = null) : IIpvsKernel, IDisposable
{
    private readonly IpvsKernelOptions _options = options ?? new IpvsKernelOptions();
    private readonly Lock _gate = new();
    private IpvsClient? _ipvs;
    private RouteNetlink? _rtnl;
    private IpsetClient? _ipset;
    private bool _ipsetNetlinkFailed;

    /// <summary>
    /// The sysctls IPVS needs (kube-proxy's): conntrack for IPVS traffic (without it the masquerade
    /// rules never see it), expiring connections of deleted destinations and their persistence
    /// templates, and forwarding.
    /// </summary>
    public static readonly IReadOnlyList<(string Name, long Value)> RequiredSysctls =
    [
        ("net/ipv4/vs/conntrack", 1),
        ("net/ipv4/vs/expire_nodest_conn", 1),
        ("net/ipv4/vs/expire_quiescent_template", 1),
        ("net/ipv4/ip_forward", 1),
    ];

    /// <summary>
    /// kube-proxy's <c>ipvs.strictARP</c>: with IPVS every service address is on kube-ipvs0, and by default
    /// Linux answers ARP for any local address on any link. arp_ignore=1 answers only for addresses of
    /// the link asked on; arp_announce=2 picks the best local source for ARP requests.
    /// </summary>
    public static readonly IReadOnlyList<(string Name, long Value)> StrictArpSysctls =
    [
        ("net/ipv4/conf/all/arp_ignore", 1),
        ("net/ipv4/conf/all/arp_announce", 2),
    ];

    /// <summary>
    /// Raises each of <see cref="StrictArpSysctls"/> to its value in the namespace the calling thread is
    /// in. Unlike kube-proxy (which sets them exactly), a value already higher (stricter: arp_ignore 2,
    /// 3 or 8) is kept. What cannot be set is one warning line (the proxy runs on); returns those sysctls.
    /// </summary>
    public static IReadOnlyList<string> EnsureStrictArp(Sysctls sysctls, ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(sysctls);
        ArgumentNullException.ThrowIfNull(logger);
        var failed = new List<string>();
        string? reason = null;
        foreach (var (name, value) in StrictArpSysctls)
        {
            var before = sysctls.Read(name);
            if (before >= value) continue;
            if (sysctls.TrySet(name, value) is { } why)
            {
                failed.Add($"{sysctls.DisplayName(name)}={value}");
                reason ??= why;
            }
            else
            {
                logger.LogInformation("ipvs.strictARP: set {Sysctl} to {Value} (was {Before})", sysctls.DisplayName(name), value, before?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "unreadable");
            }
        }
        if (failed.Count > 0)
            logger.LogWarning("ipvs.strictARP: cannot set {Sysctls} ({Reason}); the node may answer ARP for service addresses on any link (set them on the node, or give the proxy a writable /proc/sys)",
                string.Join(", ", failed), reason);
        return failed;
    }

    public IReadOnlyList<string> EnsureStrictArp(ILogger logger)
    {
        IReadOnlyList<string> failed = [];
        InNamespace(() => failed = EnsureStrictArp(new Sysctls(), logger));
        return failed;
    }

    public Task<IpvsTimeouts> GetTimeoutsAsync(CancellationToken cancellationToken) =>
        Task.FromResult(AskKernel(() => Clients().Ipvs.GetTimeouts()));

    public Task SetTimeoutsAsync(IpvsTimeouts timeouts, CancellationToken cancellationToken)
    {
        AskKernel(() =>
        {
            Clients().Ipvs.SetTimeouts(timeouts);
            return true;
        });
        return Task.CompletedTask;
    }

    private void InNamespace(Action action)
    {
        if (_options.InNamespace is { } run) run(action);
        else action();
    }

    /// <summary>The netlink clients, opened on first use in the target namespace; without IPVS in the kernel, the clear error.</summary>
    private (IpvsClient Ipvs, RouteNetlink Rtnl) Clients() =>
        (TryIpvs() ?? throw new GenericNetlinkFamilyNotFoundException(LinuxUapi.IpVs.IPVS_GENL_NAME, IpvsClient.MissingMeaning), Rtnl());

    private RouteNetlink Rtnl()
    {
        lock (_gate)
        {
            if (_rtnl is null) InNamespace(() => _rtnl = RouteNetlink.Open());
            return _rtnl!;
        }
    }

    /// <summary>The IPVS client, or null when the kernel has no IPVS (cleanup then has no virtual servers to remove).</summary>
    private IpvsClient? TryIpvs()
    {
        lock (_gate)
        {
            // Asked again each time until found: ip_vs may be loaded after the proxy started.
            if (_ipvs is null)
            {
                try
                {
                    InNamespace(() => _ipvs = IpvsClient.Open());
                }
                catch (GenericNetlinkFamilyNotFoundException)
                {
                }
            }
            return _ipvs;
        }
    }

    public Task PrepareAsync(IpvsPlannerOptions options, CancellationToken cancellationToken)
    {
        try
        {
            Clients(); // the clear error when the kernel has no IPVS
        }
        catch (NetlinkException e)
        {
            throw new IpvsKernelException(e.Message, e);
        }
        if (IpvsSchedulers.IsAvailable(options.Scheduler) == false)
            throw new IpvsKernelException($"the kernel has no IPVS scheduler {options.Scheduler} (no module ip_vs_{options.Scheduler} for this kernel)");
        string? problem = null;
        InNamespace(() => problem = EnsureSysctls());
        if (problem is not null) throw new IpvsKernelException(problem);
        return Task.CompletedTask;
    }

    /// <summary>Sets each sysctl that does not have its value; returns what could not be set.</summary>
    private static string? EnsureSysctls()
    {
        var sysctls = new Sysctls();
        foreach (var (name, value) in RequiredSysctls)
        {
            if (sysctls.TrySet(name, value) is { } reason)
            {
                var dotted = sysctls.DisplayName(name);
                return $"cannot set {dotted}={value} ({reason}); IPVS needs it: set it on the node (sysctl -w {dotted}={value}) or give the proxy a writable /proc/sys";
            }
        }
        return null;
    }

    public async Task<IpvsKernelView> ReadAsync(IReadOnlyList<IpFamily> families, CancellationToken cancellationToken)
    {
        try
        {
            return await ReadCoreAsync(families, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is NetlinkException or NetlinkProtocolException)
        {
            throw new IpvsKernelException(e.Message, e);
        }
    }

    private async Task<IpvsKernelView> ReadCoreAsync(IReadOnlyList<IpFamily> families, CancellationToken cancellationToken)
    {
        // Without IPVS (a node that never ran this mode) there are no virtual servers: cleanup still works.
        var ipvs = TryIpvs();
        var rtnl = Rtnl();
        var link = rtnl.FindLink(IpvsNames.Link);
        var links = rtnl.ListLinks().ToDictionary(l => l.Index);
        var addresses = rtnl.ListAddresses();
        var services = new Dictionary<VirtualServerKey, KernelVirtualServer>();
        foreach (var service in ipvs?.ListServices() ?? [])
        {
            if (ToKey(service.Id) is not { } key) continue;
            var destinations = ipvs!.ListDestinations(service.Id).Select(ToDestination).ToList();
            services[key] = new KernelVirtualServer(new VirtualServer(key, service.Scheduler, service.Flags, (int)service.TimeoutSeconds), destinations);
        }
        var view = new IpvsKernelView
        {
            LinkExists = link is not null,
            LinkAddresses = addresses.Where(a => a.InterfaceIndex == link?.Index).Select(a => a.Address).ToList(),
            NodeAddresses = addresses
                .Where(a => a.InterfaceIndex != link?.Index && !(links.GetValueOrDefault(a.InterfaceIndex)?.IsLoopback ?? false))
                .Select(a => a.Address)
                .Where(a => !IPAddress.IsLoopback(a) && !a.IsIPv6LinkLocal)
                .ToList(),
            Services = services,
            Ipsets = ParseIpsetSave(await TryRunAsync("ipset", ["save"], cancellationToken).ConfigureAwait(false)),
            BuiltInRules = await ReadBuiltInRulesAsync(families, cancellationToken).ConfigureAwait(false),
        };
        return view;
    }

    private async Task<Dictionary<IpFamily, BuiltInRules>> ReadBuiltInRulesAsync(IReadOnlyList<IpFamily> families, CancellationToken cancellationToken)
    {
        var rules = new Dictionary<IpFamily, BuiltInRules>();
        foreach (var family in families)
        {
            var (_, nat) = IptablesSave.ParseTable(await SaveIptablesAsync(family, "nat", cancellationToken).ConfigureAwait(false));
            var (_, filter) = IptablesSave.ParseTable(await SaveIptablesAsync(family, "filter", cancellationToken).ConfigureAwait(false));
            rules[family] = new BuiltInRules(nat.ToHashSet(StringComparer.Ordinal), filter.ToHashSet(StringComparer.Ordinal));
        }
        return rules;
    }

    public Task<IReadOnlyDictionary<VirtualServerKey, IReadOnlyList<KernelDestination>>> ReadDestinationsAsync(IReadOnlyCollection<VirtualServerKey> servers, CancellationToken cancellationToken)
    {
        IpvsClient ipvs;
        try
        {
            ipvs = Clients().Ipvs;
        }
        catch (NetlinkException e)
        {
            throw new IpvsKernelException(e.Message, e);
        }
        var result = new Dictionary<VirtualServerKey, IReadOnlyList<KernelDestination>>();
        foreach (var key in servers)
        {
            try
            {
                result[key] = ipvs.ListDestinations(ToId(key)).Select(ToDestination).ToList();
            }
            catch (NetlinkException e) when (e.Errno == LinuxUapi.Errno.ESRCH)
            {
                // Gone behind our back: left out, the planner keeps what it remembers. (The kernel's
                // dump of a missing service is usually just empty: ServiceExistsAsync tells them apart.)
            }
            catch (Exception e) when (e is NetlinkException or NetlinkProtocolException)
            {
                throw new IpvsKernelException(e.Message, e);
            }
        }
        return Task.FromResult<IReadOnlyDictionary<VirtualServerKey, IReadOnlyList<KernelDestination>>>(result);
    }

    public Task<bool> ServiceExistsAsync(VirtualServerKey server, CancellationToken cancellationToken) =>
        Task.FromResult(AskKernel(() => Clients().Ipvs.GetService(ToId(server)) is not null));

    public Task<bool> LinkExistsAsync(CancellationToken cancellationToken) =>
        Task.FromResult(AskKernel(() => Rtnl().FindLink(IpvsNames.Link) is not null));

    /// <summary>One netlink question; the kernel's refusals become <see cref="IpvsKernelException"/>s.</summary>
    private static T AskKernel<T>(Func<T> ask)
    {
        try
        {
            return ask();
        }
        catch (Exception e) when (e is NetlinkException or NetlinkProtocolException)
        {
            throw new IpvsKernelException(e.Message, e);
        }
    }

    public async Task<string> SaveIptablesAsync(IpFamily family, string table, CancellationToken cancellationToken)
    {
        try
        {
            return await Iptables(family).SaveAsync(table, cancellationToken).ConfigureAwait(false);
        }
        catch (CommandException e)
        {
            throw new IpvsKernelException(e.Message, e);
        }
    }

    private IptablesCommandApplier Iptables(IpFamily family) => new(_options.IptablesVariant, family, _options.CommandPrefix);

    public async Task ApplyAsync(IReadOnlyList<IpvsOperation> operations, CancellationToken cancellationToken)
    {
        for (var i = 0; i < operations.Count;)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var kind = operations[i].Kind;
            var end = i;
            while (end < operations.Count && operations[end].Kind == kind) end++;
            var group = operations.Skip(i).Take(end - i).ToList();
            i = end;
            try
            {
                // Netlink only for what needs it: the restore steps run without IPVS in the kernel.
                var rtnl = kind is OperationKind.Link or OperationKind.Address ? Rtnl() : null!;
                var ipvs = kind is OperationKind.Ipvs ? Clients().Ipvs : null!;
                switch (kind)
                {
                    case OperationKind.Link:
                        foreach (var operation in group)
                        {
                            if (operation is CreateLink create) rtnl.CreateLink(create.Name, create.LinkKind);
                            else if (operation is DeleteLink delete && rtnl.FindLink(delete.Name) is { } link) rtnl.DeleteLink(link);
                        }
                        break;
                    case OperationKind.Address:
                    {
                        var link = rtnl.FindLink(IpvsNames.Link) ?? throw new IpvsKernelException($"{group[0]}: the link {IpvsNames.Link} does not exist");
                        rtnl.Socket.ExecuteBatch(group.Select(o => o switch
                        {
                            AddAddress add => RouteNetlink.AddAddressRequest(link, add.Address, add.PrefixLength),
                            DeleteAddress delete => RouteNetlink.DeleteAddressRequest(link, delete.Address, delete.PrefixLength),
                            _ => throw new ArgumentException(o.ToString()),
                        }).ToList());
                        break;
                    }
                    case OperationKind.Ipvs:
                        ipvs.Apply(group.Select(o => ToRequest(ipvs, o)).ToList());
                        break;
                    case OperationKind.Ipset:
                        foreach (var restore in group.Cast<IpsetRestore>())
                            await RestoreIpsetsAsync(restore, cancellationToken).ConfigureAwait(false);
                        break;
                    case OperationKind.Iptables:
                        foreach (var restore in group.Cast<IptablesRestore>())
                        {
                            try
                            {
                                await Iptables(restore.Family).RestoreAsync(restore.Script, cancellationToken).ConfigureAwait(false);
                            }
                            catch (CommandException e)
                            {
                                throw new IpvsKernelException($"{e.Message} (refused its input)", e);
                            }
                        }
                        break;
                }
            }
            catch (Exception e) when (e is NetlinkException or NetlinkProtocolException)
            {
                throw new IpvsKernelException(e.Message, e);
            }
        }
    }

    /// <summary>How many <c>ipset restore</c> scripts went over netlink instead of the process (tests).</summary>
    internal int IpsetScriptsOverNetlink { get; private set; }

    /// <summary>
    /// One <c>ipset restore</c>. A script of entry changes only (a partial sync's: every line <c>add</c>
    /// or <c>del</c> with <c>-exist</c>, of this mode's sets) goes over netlink (<see cref="IpsetClient"/>)
    /// without starting the process; any other script (creates, destroys: full syncs, the cleanup)
    /// runs <c>ipset restore</c>. Netlink only where its socket is in the tools' namespace (no
    /// <see cref="IpvsKernelOptions.CommandPrefix"/>, or one with <see cref="IpvsKernelOptions.InNamespace"/>).
    /// When netlink fails, the process runs the whole script (every line is idempotent with -exist): its
    /// error says what is wrong with an entry; when it succeeds instead, netlink is not tried again.
    /// </summary>
    private async Task RestoreIpsetsAsync(IpsetRestore restore, CancellationToken cancellationToken)
    {
        var netlinkFailed = false;
        if (!_ipsetNetlinkFailed && (_options.CommandPrefix.Count == 0 || _options.InNamespace is not null) && IpsetRequests(restore.Script) is { } requests)
        {
            try
            {
                IpsetClient client;
                lock (_gate)
                {
                    if (_ipset is null) InNamespace(() => _ipset = IpsetClient.Open());
                    client = _ipset!;
                }
                client.Apply(requests);
                IpsetScriptsOverNetlink++;
                return;
            }
            catch (Exception e) when (e is NetlinkException or NetlinkProtocolException)
            {
                netlinkFailed = true;
            }
        }
        await RunCheckedAsync("ipset", ["restore"], restore.Script, cancellationToken).ConfigureAwait(false);
        if (netlinkFailed) _ipsetNetlinkFailed = true;
    }

    /// <summary>The netlink requests of an <c>ipset restore</c> script of add/del lines (with -exist) of this mode's sets; null for anything else.</summary>
    internal static List<NetlinkRequest>? IpsetRequests(string script)
    {
        var requests = new List<NetlinkRequest>();
        foreach (var line in script.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            if (!line.EndsWith(" -exist", StringComparison.Ordinal)) return null;
            var words = line[..^" -exist".Length].Split(' ', 3);
            if (words.Length != 3 || words[0] is not ("add" or "del") || IpvsNames.DefinitionOf(words[1]) is not { } definition) return null;
            if (IpsetElementOf(definition.Type, words[2]) is not { } element) return null;
            requests.Add(words[0] == "add"
                ? IpsetClient.AddRequest(words[1], element, exist: true, $"ipset {line}")
                : IpsetClient.DeleteRequest(words[1], element, exist: true, $"ipset {line}"));
        }
        return requests;
    }

    /// <summary>
    /// An entry as <c>ipset save</c> prints it (the key, then <c>comment "…"</c> when it has one) as the
    /// attributes of its set type; null when it does not parse (the process then reads it).
    /// </summary>
    internal static IpsetElement? IpsetElementOf(string type, string entry)
    {
        string? comment = null;
        var space = entry.IndexOf(' ');
        if (space >= 0)
        {
            var rest = entry[(space + 1)..];
            if (!rest.StartsWith("comment \"", StringComparison.Ordinal) || !rest.EndsWith('"') || rest.Length < "comment \"\"".Length) return null;
            comment = rest["comment \"".Length..^1];
            if (comment.Contains('"')) return null;
            entry = entry[..space];
        }
        var parts = entry.Split(',');
        static int? Port(string text) => int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var p) && p <= 65535 ? p : null;
        static (byte Protocol, int Port)? ProtoPort(string text) => text.Split(':') is [var name, var port] && Port(port) is { } p
            ? name switch { "tcp" => ((byte)6, p), "udp" => ((byte)17, p), "sctp" => ((byte)132, p), _ => null }
            : null;
        static IPAddress? Ip(string text) => IPAddress.TryParse(text, out var ip) && !text.Contains('/') ? ip : null;
        switch (type)
        {
            case "bitmap:port" when parts is [var port] && Port(port) is { } p:
                return new IpsetElement(Port: p, Comment: comment);
            case "hash:ip" when parts is [var address] && Ip(address) is { } ip:
                return new IpsetElement(ip, Comment: comment);
            case "hash:ip,port" when parts is [var address, var pp] && Ip(address) is { } ip && ProtoPort(pp) is { } x:
                return new IpsetElement(ip, x.Port, x.Protocol, Comment: comment);
            case "hash:ip,port,ip" when parts is [var address, var pp, var address2] && Ip(address) is { } ip && ProtoPort(pp) is { } x
                && Ip(address2) is { } ip2 && ip2.AddressFamily == ip.AddressFamily:
                return new IpsetElement(ip, x.Port, x.Protocol, ip2, Comment: comment);
            case "hash:ip,port,net" when parts is [var address, var pp, var net] && Ip(address) is { } ip && ProtoPort(pp) is { } x
                && IpPrefix.TryParse(net.Contains('/') ? net : $"{net}/{(ip.AddressFamily == AddressFamily.InterNetworkV6 ? 128 : 32)}", out var prefix)
                && prefix.Address.AddressFamily == ip.AddressFamily && prefix.Length > 0:
                return new IpsetElement(ip, x.Port, x.Protocol, prefix.Address, (byte)prefix.Length, comment);
            default:
                return null;
        }
    }

    private static NetlinkRequest ToRequest(IpvsClient ipvs, IpvsOperation operation) => operation switch
    {
        AddService add => ipvs.NewService(ToService(add.Server)),
        EditService edit => ipvs.SetService(ToService(edit.Server)),
        DeleteService delete => ipvs.DelService(ToId(delete.Key)),
        AddDestination add => ipvs.NewDestination(ToId(add.Service), new IpvsDestination(add.Destination.Address, (ushort)add.Destination.Port, add.Weight)),
        EditDestination edit => ipvs.SetDestination(ToId(edit.Service), new IpvsDestination(edit.Destination.Address, (ushort)edit.Destination.Port, edit.Weight)),
        DeleteDestination delete => ipvs.DelDestination(ToId(delete.Service), delete.Destination.Address, (ushort)delete.Destination.Port),
        _ => throw new ArgumentException($"not an IPVS operation: {operation}"),
    };

    internal static IpvsServiceId ToId(VirtualServerKey key) => new(key.Address, key.Protocol switch
    {
        Protocol.TCP => IpvsProtocol.TCP,
        Protocol.UDP => IpvsProtocol.UDP,
        _ => IpvsProtocol.SCTP,
    }, (ushort)key.Port);

    internal static VirtualServerKey? ToKey(IpvsServiceId id) => id.Protocol switch
    {
        IpvsProtocol.TCP => new VirtualServerKey(id.Address, Protocol.TCP, id.Port),
        IpvsProtocol.UDP => new VirtualServerKey(id.Address, Protocol.UDP, id.Port),
        IpvsProtocol.SCTP => new VirtualServerKey(id.Address, Protocol.SCTP, id.Port),
        _ => null,
    };

    private static IpvsService ToService(VirtualServer server) => new(ToId(server.Key), server.Scheduler, server.Flags, (uint)server.TimeoutSeconds);

    private static KernelDestination ToDestination(IpvsDestination d) =>
        new(new RealServerKey(d.Address, d.Port), d.Weight, d.ForwardMethod, d.ActiveConnections, d.InactiveConnections);

    /// <summary>Reads <c>ipset save</c>: this mode's sets and their entries (an entry's comment kept: <c>10.96.0.10,tcp:80 comment "ns/name:port"</c>).</summary>
    public static Dictionary<string, IReadOnlySet<string>> ParseIpsetSave(string save)
    {
        var sets = new Dictionary<string, HashSet<string>>(StringComparer.Ordinal);
        foreach (var line in save.Split('\n'))
        {
            var words = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (words.Length < 3 || !IpvsNames.IsOurSet(words[1])) continue;
            if (words[0] == "create") sets.TryAdd(words[1], new HashSet<string>(StringComparer.Ordinal));
            else if (words[0] == "add")
            {
                if (!sets.TryGetValue(words[1], out var entries)) sets[words[1]] = entries = new HashSet<string>(StringComparer.Ordinal);
                // The entry with its comment, if it has one (KUBE-IPVS-NAMES): as the planner writes it.
                entries.Add(string.Join(' ', words.Skip(2)));
            }
        }
        return sets.ToDictionary(s => s.Key, s => (IReadOnlySet<string>)s.Value, StringComparer.Ordinal);
    }

    private async Task<string> RunAsync(string tool, IReadOnlyList<string> arguments, string? input, CancellationToken cancellationToken)
    {
        var result = await RunCommandAsync(tool, arguments, input, cancellationToken).ConfigureAwait(false);
        if (!result.Succeeded)
            throw new IpvsKernelException($"{ExternalCommand.Format(tool, arguments)} exited with {result.ExitCode}: {ExternalCommand.FirstLines(result.StandardError, 5)}");
        return result.StandardOutput;
    }

    /// <summary>The tool's output; empty when the tool is not installed (a sync then fails on restoring, saying so).</summary>
    private async Task<string> TryRunAsync(string tool, IReadOnlyList<string> arguments, CancellationToken cancellationToken)
    {
        try
        {
            return await RunAsync(tool, arguments, null, cancellationToken).ConfigureAwait(false);
        }
        catch (IpvsKernelException e) when (e.InnerException is CommandException)
        {
            return "";
        }
    }

    private async Task RunCheckedAsync(string tool, IReadOnlyList<string> arguments, string input, CancellationToken cancellationToken)
    {
        var result = await RunCommandAsync(tool, arguments, input, cancellationToken).ConfigureAwait(false);
        if (!result.Succeeded)
            throw new IpvsKernelException($"{tool} {string.Join(' ', arguments)} refused its input (exit {result.ExitCode}): {ExternalCommand.FirstLines(result.StandardError, 5)}");
    }

    private async Task<CommandResult> RunCommandAsync(string tool, IReadOnlyList<string> arguments, string? input, CancellationToken cancellationToken)
    {
        var prefix = _options.CommandPrefix;
        var file = prefix.Count > 0 ? prefix[0] : tool;
        List<string> args = prefix.Count > 0 ? [.. prefix.Skip(1), tool, .. arguments] : [.. arguments];
        try
        {
            return await ExternalCommand.RunAsync(file, args, input, TimeSpan.FromMinutes(2), cancellationToken).ConfigureAwait(false);
        }
        catch (CommandException e)
        {
            throw new IpvsKernelException($"{tool} could not be run ({e.Message}): install the ipset package", e);
        }
    }

    public void Dispose()
    {
        lock (_gate)
        {
            _ipvs?.Dispose();
            _rtnl?.Dispose();
            _ipset?.Dispose();
            _ipvs = null;
            _rtnl = null;
            _ipset = null;
        }
    }
}
