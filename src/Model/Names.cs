namespace ProxyPlanes.Model;

public enum Protocol { TCP, UDP, SCTP }

public enum IpFamily { IPv4, IPv6 }

/// <summary>namespace/name of an object.</summary>
public readonly record struct NamespacedName(string Namespace, string Name) : IComparable<NamespacedName>
{
    public int CompareTo(NamespacedName other)
    {
        var byNamespace = string.CompareOrdinal(Namespace, other.Namespace);
        return byNamespace != 0 ? byNamespace : string.CompareOrdinal(Name, other.Name);
    }

    public override string ToString() => $"{Namespace}/{Name}";
}

/// <summary>
/// One port of one service: the unit every data plane programs. Printed as kube-proxy prints
/// it ("ns/name:port", or "ns/name" for an unnamed port), which is what rule comments carry.
/// </summary>
public readonly record struct ServicePortName(NamespacedName Service, string Port, Protocol Protocol) : IComparable<ServicePortName>
{
    public int CompareTo(ServicePortName other)
    {
        var c = Service.CompareTo(other.Service);
        if (c != 0) return c;
        c = string.CompareOrdinal(Port, other.Port);
        return c != 0 ? c : Protocol.CompareTo(other.Protocol);
    }

    public override string ToString() => Port.Length == 0 ? Service.ToString() : $"{Service}:{Port}";
}
