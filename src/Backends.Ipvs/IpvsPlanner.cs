using System.Collections.Immutable;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;

namespace ProxyPlanes.Backends.Ipvs;

/// <summary>The planner's settings (the backend's constructor parameters).</summary>
public sealed record IpvsPlannerOptions
{
    /// <summary>The IP families programmed (IPv4, and IPv6 where the node has it).</summary>
    public IReadOnlyList<IpFamily> Families { get; init; } = [IpFamily.IPv4];

    /// <summary>The IPVS scheduler of every virtual server (kube-proxy's <c>ipvs.scheduler</c>; rr by default).</summary>
    public string Scheduler { get; init; } = "rr";

    /// <summary>How long a removed TCP destination may drain (weight 0) before it is deleted with connections left.</summary>
    public TimeSpan GracefulTerminationTimeout { get; init; } = TimeSpan.FromMinutes(15);

    /// <summary>Virtual servers inside these prefixes are someone else's: never deleted (kube-proxy's <c>ipvs.excludeCIDRs</c>).</summary>
    public IReadOnlyList<IpPrefix> ExcludeCidrs { get; init; } = [];

    /// <summary>The fwmark bit that asks for masquerade (kube-proxy's default 14: 0x4000).</summary>
    public int MasqueradeBit { get; init; } = 14;
}

/// <summary>The planner's output: the operations in order (<see cref="ToString"/> is a script doing the same), and the state to remember.</summary>
public sealed record IpvsPlan(ImmutableArray<IpvsOperation> Operations, IpvsPlannerState State, bool Full)
{
    public int VirtualServers => State.Kernel.Count;
    public int Destinations => State.Totals.Destinations;

    public override string ToString()
    {
        var text = new StringBuilder();
        foreach (var operation in Operations) text.Append(operation).Append('\n');
        return text.ToString();
    }
}

/// <summary>
/// Pure planner of the IPVS data plane (kube-proxy's IPVS mode): DesiredState (+ changed service
/// ports, + what a full sync read from the kernel) → the operations that make the kernel match, in
/// order: the dummy link, ipset entries and the helper rules first, then virtual servers and
/// destinations, then addresses; deletions last. Every service address is bound to kube-ipvs0; each
/// frontend (cluster IP, node port on every node address, external and load-balancer IP) is one
/// masquerading virtual server. A removed TCP destination is set to weight 0 and deleted once its
/// connections are gone or <see cref="IpvsPlannerOptions.GracefulTerminationTimeout"/> passed.
/// </summary>
public sealed class IpvsPlanner
{
    private readonly IpvsPlannerOptions _options;
    private readonly string _mark;

    public IpvsPlanner(IpvsPlannerOptions? options = null)
    {
        _options = options ?? new IpvsPlannerOptions();
        if (_options.Families.Count == 0) throw new ArgumentException("at least one IP family is needed", nameof(options));
        IpvsSchedulers.Validate(_options.Scheduler);
        _mark = "0x" + (1 << _options.MasqueradeBit).ToString("x", CultureInfo.InvariantCulture);
    }

    public IpvsPlannerOptions Options => _options;

    /// <summary>
    /// Plans one sync. Full when <paramref name="request"/> says so or <paramref name="previous"/> is
    /// null: <paramref name="kernel"/> (required then) is compared with everything wanted. Otherwise
    /// partial: only what the changed service ports own is touched. <paramref name="liveDestinations"/>
    /// holds the destinations (with connection counts) of the virtual servers
    /// <see cref="ServersToInspect"/> named, read just before: draining destinations whose
    /// connections ended are deleted.
    /// </summary>
    public IpvsPlan Plan(SyncRequest request, IpvsPlannerState? previous, IpvsKernelView? kernel, DateTimeOffset now,
        IReadOnlyDictionary<VirtualServerKey, IReadOnlyList<KernelDestination>>? liveDestinations = null)
    {
        if (request.Full || previous is null)
            return PlanFull(request.State, kernel ?? throw new ArgumentNullException(nameof(kernel), "a full sync needs the kernel's view"), previous, now);
        return PlanPartial(request, previous, now, liveDestinations ?? new Dictionary<VirtualServerKey, IReadOnlyList<KernelDestination>>());
    }

    /// <summary>
    /// The virtual servers whose destinations a partial sync should read first: those the changed
    /// service ports had or get (a destination removed without connections is deleted at once) and
    /// those with draining destinations.
    /// </summary>
    public IReadOnlyCollection<VirtualServerKey> ServersToInspect(SyncRequest request, IpvsPlannerState previous)
    {
        var keys = new SortedSet<VirtualServerKey>();
        foreach (var name in request.ChangedPorts)
        {
            // Before and after: a port may take over a virtual server another one had (shared addresses).
            var before = previous.Ports.GetValueOrDefault(name)?.Servers ?? EquatableArray<DesiredServer>.Empty;
            var after = request.State.ServicePorts.TryGetValue(name, out var port)
                ? BuildPort(port, request.State.Network, previous.NodeAddresses).Servers
                : EquatableArray<DesiredServer>.Empty;
            foreach (var server in before.Concat(after))
                if (previous.Kernel.ContainsKey(server.Definition.Key)) keys.Add(server.Definition.Key);
        }
        foreach (var key in previous.Totals.DrainingServers) keys.Add(key);
        return keys;
    }

    // ------------------------------------------------------------------ full sync

    private IpvsPlan PlanFull(DesiredState state, IpvsKernelView kernel, IpvsPlannerState? previous, DateTimeOffset now)
    {
        var nodeAddresses = kernel.NodeAddresses
            .Where(a => !IPAddress.IsLoopback(a) && !a.IsIPv6LinkLocal && !kernel.LinkAddresses.Contains(a))
            .Distinct().Order(IpvsText.AddressComparer).ToImmutableArray();

        var ports = ImmutableDictionary.CreateBuilder<ServicePortName, PortObjects>();
        foreach (var (name, port) in state.ServicePorts)
        {
            var objects = BuildPort(port, state.Network, nodeAddresses);
            if (objects != PortObjects.Empty) ports[name] = objects;
        }
        var servers = Claims<VirtualServerKey>.From(ports.SelectMany(p => p.Value.Servers.Select(s => (s.Definition.Key, p.Key))));
        var addresses = Claims<IPAddress>.From(ports.SelectMany(p => p.Value.Addresses.Select(a => (a, p.Key))));
        var entries = Claims<IpsetEntry>.From(ports.SelectMany(p => p.Value.Entries.Select(e => (e, p.Key))));
        var outFilter = Claims<OutFilterEntry>.From(ports.SelectMany(p => p.Value.OutFilter.Select(e => (e, p.Key))));
        var portMap = ports.ToImmutable();
        var setSizes = IpvsPlannerState.SizesOf(entries);

        var ops = new Steps();
        if (!kernel.LinkExists) ops.Link.Add(new CreateLink(IpvsNames.Link));

        // ipsets: create what is missing, then add and delete entries.
        var creates = new StringBuilder();
        foreach (var definition in IpvsNames.Sets)
            foreach (var family in _options.Families)
                if (!kernel.Ipsets.ContainsKey(definition.Name(family))) creates.Append(definition.CreateLine(family)).Append('\n');
        var present = kernel.Ipsets.SelectMany(s => s.Value.Select(e => new IpsetEntry(s.Key, e))).Where(e => IsOurFamilySet(e.Set)).ToHashSet();
        var names = servers.Keys.Select(k => NameEntry(k, servers.Winner(k)!.Value)).ToHashSet();
        var adds = entries.Keys.Concat(names).Where(e => !present.Contains(e)).ToList();
        ops.IpsetAdds(creates, adds);
        // A name whose comment changed is updated by its add (-exist); deleting its key would remove it.
        var renamed = adds.Where(e => IsNamesSet(e.Set)).Select(e => (e.Set, IpsetDefinition.KeyOf(e.Entry))).ToHashSet();
        ops.IpsetDels(present.Where(e => !entries.Contains(e) && !names.Contains(e) && !renamed.Contains((e.Set, IpsetDefinition.KeyOf(e.Entry)))));

        // Helper rules: every family's whole script, with the jumps the built-in chains lack.
        var bodies = ImmutableDictionary.CreateBuilder<IpFamily, string>();
        foreach (var family in _options.Families)
        {
            var body = RulesBody(family, state.Network, setSizes, outFilter);
            bodies[family] = body.ToString();
            ops.Iptables.Add(new IptablesRestore(family, body.Script(kernel.BuiltInRules.GetValueOrDefault(family) ?? BuiltInRules.Empty)));
        }

        // Virtual servers: wanted ones created or corrected, destinations compared one by one.
        var applied = ImmutableDictionary.CreateBuilder<VirtualServerKey, AppliedServer>();
        foreach (var key in servers.Keys.Order())
        {
            var desired = WinnerOf(portMap, servers, key);
            kernel.Services.TryGetValue(key, out var current);
            var known = previous?.Kernel.GetValueOrDefault(key);
            var result = DiffServer(key, desired, current?.Definition, current is null ? null : Live(current.Destinations, known), now, ops);
            if (result is not null) applied[key] = result;
        }
        foreach (var (key, _) in kernel.Services.OrderBy(s => s.Key))
        {
            if (servers.Contains(key) || !_options.Families.Contains(key.Family) || _options.ExcludeCidrs.Any(c => c.Contains(key.Address))) continue;
            ops.IpvsDeletes.Add(new DeleteService(key));
        }

        // Addresses on kube-ipvs0: all of them are ours.
        foreach (var address in addresses.Keys.Order(IpvsText.AddressComparer))
            if (!kernel.LinkAddresses.Contains(address)) ops.AddressAdds.Add(new AddAddress(IpvsNames.Link, address));
        foreach (var address in kernel.LinkAddresses.Order(IpvsText.AddressComparer))
            if (!addresses.Contains(address)) ops.AddressDeletes.Add(new DeleteAddress(IpvsNames.Link, address));

        var kept = applied.ToImmutable();
        var newState = new IpvsPlannerState(portMap, servers, addresses, entries, outFilter, kept, nodeAddresses, bodies.ToImmutable(), KernelTotals.Of(kept), setSizes);
        return new IpvsPlan(ops.InOrder(), newState, Full: true);
    }

    // ------------------------------------------------------------------ partial sync

    private IpvsPlan PlanPartial(SyncRequest request, IpvsPlannerState previous, DateTimeOffset now,
        IReadOnlyDictionary<VirtualServerKey, IReadOnlyList<KernelDestination>> live)
    {
        var network = request.State.Network;
        var ports = previous.Ports.ToBuilder();
        var (servers, addresses, entries, outFilter) = (previous.Servers, previous.Addresses, previous.Entries, previous.OutFilter);
        var touchedServers = new SortedSet<VirtualServerKey>();
        var touchedAddresses = new HashSet<IPAddress>();
        var touchedEntries = new HashSet<IpsetEntry>();

        foreach (var name in request.ChangedPorts.Order())
        {
            var before = previous.Ports.GetValueOrDefault(name) ?? PortObjects.Empty;
            var after = request.State.ServicePorts.TryGetValue(name, out var port) ? BuildPort(port, network, previous.NodeAddresses) : PortObjects.Empty;
            if (before == after) continue;
            foreach (var s in before.Servers) { servers = servers.Remove(s.Definition.Key, name); touchedServers.Add(s.Definition.Key); }
            foreach (var a in before.Addresses) { addresses = addresses.Remove(a, name); touchedAddresses.Add(a); }
            foreach (var e in before.Entries) { entries = entries.Remove(e, name); touchedEntries.Add(e); }
            foreach (var o in before.OutFilter) outFilter = outFilter.Remove(o, name);
            foreach (var s in after.Servers) { servers = servers.Add(s.Definition.Key, name); touchedServers.Add(s.Definition.Key); }
            foreach (var a in after.Addresses) { addresses = addresses.Add(a, name); touchedAddresses.Add(a); }
            foreach (var e in after.Entries) { entries = entries.Add(e, name); touchedEntries.Add(e); }
            foreach (var o in after.OutFilter) outFilter = outFilter.Add(o, name);
            if (after == PortObjects.Empty) ports.Remove(name);
            else ports[name] = after;
        }
        var portMap = ports.ToImmutable();
        var ops = new Steps();

        // ipset entries whose wanted-ness changed; names of virtual servers whose owner changed (a new
        // owner's add updates the comment, -exist).
        var nameAdds = new List<IpsetEntry>();
        var nameDels = new List<IpsetEntry>();
        foreach (var key in touchedServers)
        {
            var before = previous.Servers.Winner(key);
            var after = servers.Winner(key);
            if (before == after) continue;
            if (after is { } owner) nameAdds.Add(NameEntry(key, owner));
            else nameDels.Add(NameEntry(key, before!.Value));
        }
        var entryAdds = touchedEntries.Where(e => entries.Contains(e) && !previous.Entries.Contains(e)).ToList();
        var entryDels = touchedEntries.Where(e => !entries.Contains(e) && previous.Entries.Contains(e)).ToList();
        ops.IpsetAdds(new StringBuilder(), entryAdds.Concat(nameAdds));
        ops.IpsetDels(entryDels.Concat(nameDels));
        var setSizes = previous.SetSizes;
        foreach (var e in entryAdds) setSizes = IpvsPlannerState.Resize(setSizes, e.Set, +1);
        foreach (var e in entryDels) setSizes = IpvsPlannerState.Resize(setSizes, e.Set, -1);

        // Helper rules only when they changed (which sets are empty, the out-filter drops).
        var bodies = previous.RuleBodies.ToBuilder();
        foreach (var family in _options.Families)
        {
            var body = RulesBody(family, network, setSizes, outFilter);
            if (previous.RuleBodies.GetValueOrDefault(family) == body.ToString()) continue;
            bodies[family] = body.ToString();
            ops.Iptables.Add(new IptablesRestore(family, body.Script(null)));
        }

        // Virtual servers of the changed ports, and those with destinations still draining.
        var applied = previous.Kernel.ToBuilder();
        var totals = previous.Totals;
        foreach (var key in live.Keys.Where(k => previous.Kernel.TryGetValue(k, out var a) && a.HasDraining)) touchedServers.Add(key);
        foreach (var key in touchedServers)
        {
            var desired = servers.Contains(key) ? WinnerOf(portMap, servers, key) : null;
            previous.Kernel.TryGetValue(key, out var known);
            IReadOnlyDictionary<RealServerKey, KernelDestinationState>? destinations = null;
            if (known is not null)
                destinations = live.TryGetValue(key, out var read) ? Live(read, known) : Remembered(known);
            var result = DiffServer(key, desired, known?.Definition, destinations, now, ops);
            if (result is null) applied.Remove(key);
            else applied[key] = result;
            totals = totals.Replace(key, known, result);
        }

        foreach (var address in touchedAddresses.Order(IpvsText.AddressComparer))
        {
            var wanted = addresses.Contains(address);
            var had = previous.Addresses.Contains(address);
            if (wanted && !had) ops.AddressAdds.Add(new AddAddress(IpvsNames.Link, address));
            else if (!wanted && had) ops.AddressDeletes.Add(new DeleteAddress(IpvsNames.Link, address));
        }

        var newState = previous with
        {
            Ports = portMap,
            Servers = servers,
            Addresses = addresses,
            Entries = entries,
            OutFilter = outFilter,
            Kernel = applied.ToImmutable(),
            RuleBodies = bodies.ToImmutable(),
            Totals = totals,
            SetSizes = setSizes,
        };
        return new IpvsPlan(ops.InOrder(), newState, Full: false);
    }

    // ------------------------------------------------------------------ one virtual server

    /// <summary>A destination as the planner sees it: in the kernel with this weight; its connections when just read.</summary>
    private sealed record KernelDestinationState(int Weight, uint ForwardMethod, long? Connections, DateTimeOffset? DrainingSince);

    private static Dictionary<RealServerKey, KernelDestinationState> Live(IReadOnlyList<KernelDestination> destinations, AppliedServer? known) =>
        destinations.ToDictionary(d => d.Key, d => new KernelDestinationState(d.Weight, d.ForwardMethod, d.Connections,
            known?.Destinations.GetValueOrDefault(d.Key)?.DrainingSince));

    private static Dictionary<RealServerKey, KernelDestinationState> Remembered(AppliedServer known) =>
        known.Destinations.ToDictionary(d => d.Key, d => new KernelDestinationState(d.Value.Weight, 0, null, d.Value.DrainingSince));

    /// <summary>
    /// The operations that turn a virtual server the kernel holds (definition and destinations, null
    /// when absent) into the wanted one (null: delete it), and what it holds afterwards.
    /// </summary>
    private AppliedServer? DiffServer(VirtualServerKey key, DesiredServer? desired, VirtualServer? current,
        IReadOnlyDictionary<RealServerKey, KernelDestinationState>? destinations, DateTimeOffset now, Steps ops)
    {
        if (desired is null)
        {
            if (current is not null) ops.IpvsDeletes.Add(new DeleteService(key));
            return null;
        }
        var definition = desired.Definition;
        if (current is null) ops.IpvsAdds.Add(new AddService(definition));
        else if (current != definition) ops.IpvsAdds.Add(new EditService(definition));

        var result = ImmutableSortedDictionary.CreateBuilder<RealServerKey, AppliedDestination>();
        var wanted = desired.Destinations.ToHashSet();
        destinations ??= new Dictionary<RealServerKey, KernelDestinationState>();
        foreach (var destination in desired.Destinations)
        {
            if (!destinations.TryGetValue(destination, out var state))
                ops.IpvsAdds.Add(new AddDestination(key, destination, 1));
            else if (state.Weight != 1 || state.ForwardMethod != 0)
                ops.IpvsAdds.Add(new EditDestination(key, destination, 1)); // back from draining, or repaired
            result[destination] = new AppliedDestination(1);
        }
        foreach (var (destination, state) in destinations.OrderBy(d => d.Key))
        {
            if (wanted.Contains(destination)) continue;
            // UDP and SCTP have no graceful termination (as in kube-proxy): their flows would never end.
            var graceful = key.Protocol == Protocol.TCP;
            var since = state.DrainingSince ?? now;
            if (!graceful || state.Connections == 0 || now - since >= _options.GracefulTerminationTimeout)
            {
                ops.IpvsDeletes.Add(new DeleteDestination(key, destination));
                continue;
            }
            if (state.Weight != 0) ops.IpvsAdds.Add(new EditDestination(key, destination, 0));
            result[destination] = new AppliedDestination(0, since);
        }
        return new AppliedServer(definition, result.ToImmutable());
    }

    private static DesiredServer WinnerOf(ImmutableDictionary<ServicePortName, PortObjects> ports, Claims<VirtualServerKey> servers, VirtualServerKey key) =>
        ports[servers.Winner(key)!.Value].Servers.First(s => s.Definition.Key == key);

    // ------------------------------------------------------------------ per service port

    /// <summary>
    /// What one service port needs, for every family it has: virtual servers (with the endpoints
    /// policy lets each kind of traffic use), addresses to bind, ipset entries, out-filter drops.
    /// </summary>
    internal PortObjects BuildPort(ServicePortState port, NodeNetwork network, IReadOnlyList<IPAddress> nodeAddresses)
    {
        var info = port.Info;
        var protocol = IpvsText.ProtocolName(info.Protocol);
        var servers = new List<DesiredServer>();
        var addresses = new List<IPAddress>();
        var entries = new List<IpsetEntry>();
        var outFilter = new List<OutFilterEntry>();

        foreach (var family in _options.Families)
        {
            var clusterIP = info.ClusterIPs.FirstOrDefault(ip => NodeAddresses.FamilyOf(ip) == family);
            if (clusterIP is null) continue;
            var verdict = port.VerdictFor(family);
            // A virtual server serves every source alike. Cluster traffic: the verdict's endpoints;
            // dropped or rejected, none (IPVS then refuses: a Drop is refused here, not dropped).
            var internalEndpoints = verdict.InternalTraffic.IsForward ? verdict.InternalTraffic.Endpoints : EquatableArray<EndpointInfo>.Empty;
            // External traffic: the verdict's endpoints (with policy Local these are this node's, for
            // pods and the node too: they cannot be told apart here). Dropped while local sources are
            // short-circuited: the short-circuit's endpoints, as kube-proxy does so pods and the node
            // reach the service, while other sources are dropped in the filter table (KUBE-NO-LOCAL-ENDPOINTS).
            var external = verdict.ExternalTraffic;
            var noLocal = external.Action == TrafficAction.Drop && verdict.LocalShortCircuit != LocalShortCircuit.None;
            var externalEndpoints = external.IsForward ? external.Endpoints
                : noLocal ? verdict.ClusterEndpoints
                : EquatableArray<EndpointInfo>.Empty;
            string Set(IpsetDefinition definition) => definition.Name(family);
            void Entry(IpsetDefinition definition, string entry) => entries.Add(new IpsetEntry(Set(definition), entry));
            string IpPort(IPAddress ip, int p) => $"{ip},{protocol}:{p.ToString(CultureInfo.InvariantCulture)}";
            void Server(IPAddress address, int servicePort, EquatableArray<EndpointInfo> targets) =>
                servers.Add(new DesiredServer(Definition(new VirtualServerKey(address, info.Protocol, servicePort), verdict),
                    new EquatableArray<RealServerKey>(targets.Select(e => new RealServerKey(e.Address, e.Port)).Distinct().Order())));
            bool Bind(IPAddress address)
            {
                // Not an address another link of the node already has (kube-proxy's shouldBind).
                if (nodeAddresses.Contains(address)) return false;
                addresses.Add(address);
                Entry(IpvsNames.IpvsIPs, address.ToString());
                return true;
            }

            // Hairpin: a local endpoint reaching itself through the service is masqueraded.
            foreach (var endpoint in verdict.Endpoints.Where(e => e.IsLocal))
                Entry(IpvsNames.LoopBack, $"{IpPort(endpoint.Address, endpoint.Port)},{endpoint.Address}");

            // Cluster IP.
            Server(clusterIP, info.Port, internalEndpoints);
            addresses.Add(clusterIP);
            Entry(IpvsNames.IpvsIPs, clusterIP.ToString());
            Entry(IpvsNames.ClusterIP, IpPort(clusterIP, info.Port));

            // External IPs.
            foreach (var ip in info.ExternalIPs.Where(ip => NodeAddresses.FamilyOf(ip) == family))
            {
                Server(ip, info.Port, externalEndpoints);
                Bind(ip);
                // The *-LOCAL sets keep the client's source (no masquerade).
                Entry(verdict.ExternalMasquerade ? IpvsNames.ExternalIP : IpvsNames.ExternalIPLocal, IpPort(ip, info.Port));
                if (noLocal) Entry(IpvsNames.NoLocalEndpoints, IpPort(ip, info.Port));
            }

            // Load-balancer IPs, with their source ranges.
            var ranges = verdict.SourceRanges;
            foreach (var ip in info.LoadBalancerIPs.Where(ip => NodeAddresses.FamilyOf(ip) == family))
            {
                Server(ip, info.Port, externalEndpoints);
                Bind(ip);
                Entry(IpvsNames.LoadBalancerSet, IpPort(ip, info.Port));
                if (!verdict.ExternalMasquerade) Entry(IpvsNames.LoadBalancerLocal, IpPort(ip, info.Port));
                if (noLocal) Entry(IpvsNames.NoLocalEndpoints, IpPort(ip, info.Port));
                if (ranges.IsEmpty) continue;
                Entry(IpvsNames.LoadBalancerFW, IpPort(ip, info.Port));
                foreach (var range in ranges) Entry(IpvsNames.LoadBalancerSourceCidr, $"{IpPort(ip, info.Port)},{NetText(range)}");
                // A request from the node to a local load-balancer IP has that IP as its source.
                if (verdict.SourceRangesAllowNode) Entry(IpvsNames.LoadBalancerSourceIP, $"{IpPort(ip, info.Port)},{ip}");
                else outFilter.Add(new OutFilterEntry(ip, info.Protocol, info.Port));
            }

            // Node port, on every node address of the family (loopback never).
            if (info.NodePort != 0)
            {
                var nodeIPs = (network.NodePortAddresses is { } selected ? selected.AsEnumerable() : nodeAddresses)
                    .Where(a => NodeAddresses.FamilyOf(a) == family && !IPAddress.IsLoopback(a) && !a.IsIPv6LinkLocal)
                    .Distinct().Order(IpvsText.AddressComparer).ToList();
                foreach (var ip in nodeIPs)
                {
                    Server(ip, info.NodePort, externalEndpoints);
                    if (noLocal) Entry(IpvsNames.NoLocalEndpoints, IpPort(ip, info.NodePort));
                }
                if (nodeIPs.Count > 0)
                {
                    var nodePort = info.NodePort.ToString(CultureInfo.InvariantCulture);
                    switch (info.Protocol)
                    {
                        case Protocol.TCP:
                            Entry(IpvsNames.NodePortTcp, nodePort);
                            if (!verdict.ExternalMasquerade) Entry(IpvsNames.NodePortLocalTcp, nodePort);
                            break;
                        case Protocol.UDP:
                            Entry(IpvsNames.NodePortUdp, nodePort);
                            if (!verdict.ExternalMasquerade) Entry(IpvsNames.NodePortLocalUdp, nodePort);
                            break;
                        default:
                            foreach (var ip in nodeIPs)
                            {
                                Entry(IpvsNames.NodePortSctp, IpPort(ip, info.NodePort));
                                if (!verdict.ExternalMasquerade) Entry(IpvsNames.NodePortLocalSctp, IpPort(ip, info.NodePort));
                            }
                            break;
                    }
                }
            }

            if (info.HealthCheckNodePort != 0) Entry(IpvsNames.HealthCheckNodePort, info.HealthCheckNodePort.ToString(CultureInfo.InvariantCulture));
        }

        return new PortObjects(
            new EquatableArray<DesiredServer>(servers.DistinctBy(s => s.Definition.Key).OrderBy(s => s.Definition.Key)),
            new EquatableArray<IPAddress>(addresses.Distinct().Order(IpvsText.AddressComparer)),
            new EquatableArray<IpsetEntry>(entries.Distinct().Order()),
            new EquatableArray<OutFilterEntry>(outFilter.Distinct().Order()));
    }

    private VirtualServer Definition(VirtualServerKey key, ServicePortVerdict verdict)
    {
        uint flags = 0;
        var timeout = 0;
        if (verdict.AffinityTimeoutSeconds is { } seconds)
        {
            // ClientIP affinity: IPVS persistence, one client (/32, /128) to one destination.
            flags |= VirtualServer.FlagPersistent;
            timeout = seconds;
        }
        // Maglev hashing over the source port too, as kube-proxy sets it.
        if (_options.Scheduler == "mh") flags |= VirtualServer.FlagSched2;
        return new VirtualServer(key, _options.Scheduler, flags, timeout);
    }

    /// <summary>A prefix as ipset prints it: a host prefix without its length.</summary>
    internal static string NetText(IpPrefix prefix) =>
        prefix.Length == (prefix.Family == IpFamily.IPv4 ? 32 : 128) ? prefix.Address.ToString() : prefix.ToString();

    /// <summary>The entry of <see cref="IpvsNames.ServiceNames"/> that names a virtual server's service port.</summary>
    internal static IpsetEntry NameEntry(VirtualServerKey key, ServicePortName owner) =>
        new(IpvsNames.ServiceNames.Name(key.Family),
            IpsetDefinition.WithComment($"{key.Address},{IpvsText.ProtocolName(key.Protocol)}:{key.Port.ToString(CultureInfo.InvariantCulture)}", owner.ToString()));

    private static bool IsNamesSet(string set) => set == IpvsNames.ServiceNames.Name(IpFamily.IPv4) || set == IpvsNames.ServiceNames.Name(IpFamily.IPv6);

    private bool IsOurFamilySet(string set) => _options.Families.Any(f => IpvsNames.Sets.Any(s => s.Name(f) == set));

    private static readonly Dictionary<string, int> SetOrders = IpvsNames.Sets
        .SelectMany((s, i) => new[] { (s.Name(IpFamily.IPv4), i * 2), (s.Name(IpFamily.IPv6), i * 2 + 1) })
        .ToDictionary(p => p.Item1, p => p.Item2, StringComparer.Ordinal);

    /// <summary>Where a set's entries go in a script: kube-proxy's set order, IPv4 before IPv6.</summary>
    internal static int SetOrder(string set) => SetOrders.GetValueOrDefault(set, int.MaxValue);

    // ------------------------------------------------------------------ helper rules

    /// <summary>The jumps from the built-in chains, in the order they should appear at their top, as iptables-save prints them.</summary>
    public static readonly ImmutableArray<(string Table, string Chain, string Rule)> BuiltInJumps =
    [
        ("filter", "INPUT", "-m comment --comment \"kubernetes ipvs access filter\" -j KUBE-IPVS-FILTER"),
        ("filter", "INPUT", "-m comment --comment \"kube-proxy firewall rules\" -j KUBE-PROXY-FIREWALL"),
        ("filter", "INPUT", "-m comment --comment \"kubernetes health check rules\" -j KUBE-NODE-PORT"),
        ("filter", "FORWARD", "-m comment --comment \"kube-proxy firewall rules\" -j KUBE-PROXY-FIREWALL"),
        ("filter", "FORWARD", "-m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD"),
        ("filter", "OUTPUT", "-m comment --comment \"kubernetes ipvs access filter\" -j KUBE-IPVS-OUT-FILTER"),
        ("nat", "OUTPUT", "-m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"),
        ("nat", "PREROUTING", "-m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"),
        ("nat", "POSTROUTING", "-m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING"),
    ];

    /// <summary>The helper rules of one family without the built-in jumps: what changes from sync to sync.</summary>
    internal sealed class RulesText(string filter, string nat)
    {
        public override string ToString() => filter + nat;

        /// <summary>The iptables-restore input: with <paramref name="builtIn"/> (a full sync), the missing jumps are inserted.</summary>
        public string Script(BuiltInRules? builtIn)
        {
            var text = new StringBuilder();
            foreach (var (table, body, chains) in new[] { ("filter", filter, IpvsNames.FilterChains), ("nat", nat, IpvsNames.NatChains) })
            {
                text.Append('*').Append(table).Append('\n');
                foreach (var chain in chains) text.Append(':').Append(chain).Append(" - [0:0]\n");
                if (builtIn is not null)
                {
                    // Inserted at the top only when missing, in reverse so they end up in the listed order.
                    var present = table == "nat" ? builtIn.Nat : builtIn.Filter;
                    for (var i = BuiltInJumps.Length - 1; i >= 0; i--)
                    {
                        var (t, chain, rule) = BuiltInJumps[i];
                        if (t == table && !present.Contains($"-A {chain} {rule}")) text.Append("-I ").Append(chain).Append(" 1 ").Append(rule).Append('\n');
                    }
                }
                text.Append(body).Append("COMMIT\n");
            }
            return text.ToString();
        }
    }

    /// <summary>
    /// kube-proxy's IPVS helper rules for one family: few and fixed, matching the ipsets. Only the
    /// external-IP rules (written when those sets have entries, as kube-proxy does) and the out-filter
    /// drops depend on the services.
    /// </summary>
    internal RulesText RulesBody(IpFamily family, NodeNetwork network, ImmutableDictionary<string, int> setSizes, Claims<OutFilterEntry> outFilter)
    {
        string S(IpsetDefinition definition) => definition.Name(family);
        bool NonEmpty(IpsetDefinition definition) => setSizes.ContainsKey(S(definition));
        var hostPrefix = family == IpFamily.IPv4 ? "/32" : "/128";
        var filter = new StringBuilder();
        var nat = new StringBuilder();
        void Filter(string rule) => filter.Append("-A ").Append(rule).Append('\n');
        void Nat(string rule) => nat.Append("-A ").Append(rule).Append('\n');
        string Comment(string text) => text.Contains(' ') ? $"-m comment --comment \"{text}\"" : $"-m comment --comment {text}";
        string Match(IpsetDefinition set, string flags) => $"{Comment(set.Comment)} -m set --match-set {S(set)} {flags}";

        // filter: source ranges of load balancers, then the drops of Local policy without local endpoints.
        Filter($"{IpvsNames.ProxyFirewall} {Match(IpvsNames.LoadBalancerFW, "dst,dst")} -j {IpvsNames.SourceRangesFirewall}");
        Filter($"{IpvsNames.SourceRangesFirewall} {Match(IpvsNames.LoadBalancerSourceCidr, "dst,dst,src")} -j RETURN");
        Filter($"{IpvsNames.SourceRangesFirewall} {Match(IpvsNames.LoadBalancerSourceIP, "dst,dst,src")} -j RETURN");
        Filter($"{IpvsNames.SourceRangesFirewall} -j DROP");
        var detector = network.LocalDetector;
        var notPod = detector.IsImplemented(family) ? " " + IfNotLocal(detector, family) : "";
        Filter($"{IpvsNames.ProxyFirewall} {Match(IpvsNames.NoLocalEndpoints, "dst,dst")}{notPod} -j DROP");
        // The node may not reach load balancers whose source ranges leave it out (IPVS steers its
        // own traffic before the filter table: match the connection's original destination).
        foreach (var entry in outFilter.Keys.Where(e => e.Family == family).Order())
        {
            var protocol = IpvsText.ProtocolName(entry.Protocol);
            Filter($"{IpvsNames.IpvsOutFilter} -s {entry.Address}{hostPrefix} -p {protocol} -m conntrack --ctorigdst {entry.Address}{hostPrefix} --ctorigdstport {entry.Port} -j DROP");
        }
        Filter($"{IpvsNames.Forward} {Comment("kubernetes forwarding rules")} -m mark --mark {_mark}/{_mark} -j ACCEPT");
        Filter($"{IpvsNames.Forward} {Comment("kubernetes forwarding conntrack rule")} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT");
        Filter($"{IpvsNames.NodePort} {Match(IpvsNames.HealthCheckNodePort, "dst")} -j ACCEPT");
        // New connections to other ports of service addresses are refused (kubernetes#72236).
        Filter($"{IpvsNames.IpvsFilter} -m set --match-set {S(IpvsNames.LoadBalancerSet)} dst,dst -j RETURN");
        Filter($"{IpvsNames.IpvsFilter} -m set --match-set {S(IpvsNames.ClusterIP)} dst,dst -j RETURN");
        Filter($"{IpvsNames.IpvsFilter} -m set --match-set {S(IpvsNames.ExternalIP)} dst,dst -j RETURN");
        Filter($"{IpvsNames.IpvsFilter} -m set --match-set {S(IpvsNames.ExternalIPLocal)} dst,dst -j RETURN");
        Filter($"{IpvsNames.IpvsFilter} -m set --match-set {S(IpvsNames.HealthCheckNodePort)} dst -j RETURN");
        Filter($"{IpvsNames.IpvsFilter} -m conntrack --ctstate NEW -m set --match-set {S(IpvsNames.IpvsIPs)} dst -j REJECT");

        // nat
        Nat($"{IpvsNames.Services} -s {(family == IpFamily.IPv4 ? "127.0.0.0/8" : "::1/128")} -j RETURN");
        Nat($"{IpvsNames.PostRouting} {Match(IpvsNames.LoopBack, "dst,dst,src")} -j MASQUERADE");
        Nat($"{IpvsNames.Services} {Match(IpvsNames.LoadBalancerSet, "dst,dst")} -j {IpvsNames.LoadBalancer}");
        Nat($"{IpvsNames.LoadBalancer} {Match(IpvsNames.LoadBalancerLocal, "dst,dst")} -j RETURN");
        foreach (var (local, all, protocol, flags) in new[]
        {
            (IpvsNames.NodePortLocalTcp, IpvsNames.NodePortTcp, "tcp", "dst"),
            (IpvsNames.NodePortLocalUdp, IpvsNames.NodePortUdp, "udp", "dst"),
            (IpvsNames.NodePortLocalSctp, IpvsNames.NodePortSctp, "sctp", "dst,dst"),
        })
        {
            Nat($"{IpvsNames.NodePort} -p {protocol} {Match(local, flags)} -j RETURN");
            Nat($"{IpvsNames.NodePort} -p {protocol} {Match(all, flags)} -j {IpvsNames.MarkMasq}");
        }
        // Off-cluster sources reaching a cluster IP are masqueraded, so replies come back through this node.
        if (network.MasqueradeAll)
            Nat($"{IpvsNames.Services} {Match(IpvsNames.ClusterIP, "dst,dst")} -j {IpvsNames.MarkMasq}");
        else if (detector.IsImplemented(family))
            Nat($"{IpvsNames.Services} {Match(IpvsNames.ClusterIP, "dst,dst")} {IfNotLocal(detector, family)} -j {IpvsNames.MarkMasq}");
        else
            // Without a pod CIDR: masquerade the node's own connections whose source is a service address.
            Nat($"{IpvsNames.Services} {Match(IpvsNames.ClusterIP, "src,dst")} -j {IpvsNames.MarkMasq}");
        foreach (var (set, masquerade) in new[] { (IpvsNames.ExternalIP, true), (IpvsNames.ExternalIPLocal, false) })
        {
            if (!NonEmpty(set)) continue;
            if (masquerade) Nat($"{IpvsNames.Services} {Match(set, "dst,dst")} -j {IpvsNames.MarkMasq}");
            // Traffic from off the machine (not bridged from a pod, not local) and traffic to a local address go on to IPVS.
            Nat($"{IpvsNames.Services} {Match(set, "dst,dst")} -m physdev ! --physdev-is-in -m addrtype ! --src-type LOCAL -j ACCEPT");
            Nat($"{IpvsNames.Services} {Match(set, "dst,dst")} -m addrtype --dst-type LOCAL -j ACCEPT");
        }
        Nat($"{IpvsNames.Services} -m addrtype --dst-type LOCAL -j {IpvsNames.NodePort}");
        Nat($"{IpvsNames.LoadBalancer} -j {IpvsNames.MarkMasq}");
        Nat($"{IpvsNames.Services} -m set --match-set {S(IpvsNames.ClusterIP)} dst,dst -j ACCEPT");
        Nat($"{IpvsNames.Services} -m set --match-set {S(IpvsNames.LoadBalancerSet)} dst,dst -j ACCEPT");
        // Packets marked for masquerade get SNAT on the way out; the mark is cleared first so a
        // packet re-entering the stack is not masqueraded twice.
        Nat($"{IpvsNames.PostRouting} -m mark ! --mark {_mark}/{_mark} -j RETURN");
        Nat($"{IpvsNames.PostRouting} -j MARK --xor-mark {_mark}");
        Nat($"{IpvsNames.PostRouting} {Comment("kubernetes service traffic requiring SNAT")} -j MASQUERADE --random-fully");
        Nat($"{IpvsNames.MarkMasq} -j MARK --or-mark {_mark}");
        return new RulesText(filter.ToString(), nat.ToString());
    }

    private static string IfNotLocal(LocalTrafficDetector detector, IpFamily family) => detector.Mode switch
    {
        LocalDetectMode.InterfaceNamePrefix => $"! -i {detector.Interface}+",
        LocalDetectMode.BridgeInterface => $"! -i {detector.Interface}",
        _ => $"! -s {detector.Cidrs.First(c => c.Family == family)}",
    };

    // ------------------------------------------------------------------ ordering

    /// <summary>The operations of one sync, collected per step and emitted in the order that keeps traffic flowing.</summary>
    private sealed class Steps
    {
        public List<IpvsOperation> Link { get; } = [];
        public List<IpvsOperation> Iptables { get; } = [];
        public List<IpvsOperation> IpvsAdds { get; } = [];
        public List<IpvsOperation> AddressAdds { get; } = [];
        public List<IpvsOperation> AddressDeletes { get; } = [];
        public List<IpvsOperation> IpvsDeletes { get; } = [];
        private IpsetRestore? _adds;
        private IpsetRestore? _dels;

        public void IpsetAdds(StringBuilder creates, IEnumerable<IpsetEntry> entries)
        {
            foreach (var entry in entries.Order()) creates.Append("add ").Append(entry.Set).Append(' ').Append(entry.Entry).Append(" -exist\n");
            if (creates.Length > 0) _adds = new IpsetRestore(creates.ToString());
        }

        public void IpsetDels(IEnumerable<IpsetEntry> entries)
        {
            var text = new StringBuilder();
            foreach (var entry in entries.Order()) text.Append("del ").Append(entry.Set).Append(' ').Append(IpsetDefinition.KeyOf(entry.Entry)).Append(" -exist\n");
            if (text.Length > 0) _dels = new IpsetRestore(text.ToString());
        }

        /// <summary>
        /// The link; ipset entries, then the rules matching them; virtual servers and destinations,
        /// then their addresses (a bound address without its virtual server would reach the node
        /// itself); then removals: addresses, destinations and virtual servers, ipset entries.
        /// </summary>
        public ImmutableArray<IpvsOperation> InOrder()
        {
            var all = ImmutableArray.CreateBuilder<IpvsOperation>();
            all.AddRange(Link);
            if (_adds is not null) all.Add(_adds);
            all.AddRange(Iptables);
            all.AddRange(IpvsAdds);
            all.AddRange(AddressAdds);
            all.AddRange(AddressDeletes);
            all.AddRange(IpvsDeletes);
            if (_dels is not null) all.Add(_dels);
            return all.ToImmutable();
        }
    }
}

/// <summary>The IPVS schedulers of the Linux kernel (the ip_vs_*.ko modules), as <c>ipvs.scheduler</c> names them.</summary>
public static class IpvsSchedulers
{
    public static readonly IReadOnlyList<string> Known = ["rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "mh", "fo", "ovf", "twos"];

    public static void Validate(string scheduler)
    {
        if (!Known.Contains(scheduler))
            throw new ArgumentException($"'{scheduler}' is not an IPVS scheduler of the Linux kernel; use one of {string.Join(", ", Known)}", nameof(scheduler));
    }

    /// <summary>
    /// Whether this kernel can load the scheduler: its module is loaded (/sys/module/ip_vs_NAME), built in
    /// (modules.builtin) or installed (modules.dep). Null when that cannot be told (no /lib/modules for
    /// this kernel, e.g. in a container without it mounted); the kernel then answers ENOENT when the first
    /// virtual server is created, and that error names the scheduler.
    /// </summary>
    public static bool? IsAvailable(string scheduler, string root = "/")
    {
        var module = $"ip_vs_{scheduler}";
        if (Directory.Exists(Path.Combine(root, "sys/module", module))) return true;
        string release;
        try
        {
            release = File.ReadAllText(Path.Combine(root, "proc/sys/kernel/osrelease")).Trim();
        }
        catch (IOException)
        {
            return null;
        }
        var modules = Path.Combine(root, "lib/modules", release);
        if (!Directory.Exists(modules)) return null;
        foreach (var list in new[] { "modules.builtin", "modules.dep" })
        {
            var path = Path.Combine(modules, list);
            if (!File.Exists(path)) continue;
            foreach (var line in File.ReadLines(path))
            {
                var name = line.Split(':', 2)[0];
                var file = name[(name.LastIndexOf('/') + 1)..];
                if (file == module + ".ko" || file.StartsWith(module + ".ko.", StringComparison.Ordinal)) return true;
            }
        }
        return false;
    }
}
