using static ProxyPlanes.Netlink.LinuxUapi.GenericNetlink;

namespace ProxyPlanes.Netlink;

/// <summary>A generic netlink family as the kernel's controller ("nlctrl") describes it.</summary>
public sealed record GenericNetlinkFamily(string Name, ushort Id, uint Version, uint HeaderSize, uint MaxAttribute);

/// <summary>Generic netlink: resolving a family's id by name (CTRL_CMD_GETFAMILY).</summary>
public static class GenericNetlink
{
    /// <summary>The controller's own name.</summary>
    public const string ControllerName = "nlctrl";

    /// <summary>
    /// Resolves <paramref name="name"/> through the controller (asking for it autoloads its module
    /// where the kernel may). When the kernel has no such family, throws
    /// <see cref="GenericNetlinkFamilyNotFoundException"/> whose message starts with
    /// <paramref name="missingMeaning"/> (e.g. "the kernel has no IPVS (modprobe ip_vs)").
    /// </summary>
    public static GenericNetlinkFamily ResolveFamily(NetlinkSocket socket, string name, string? missingMeaning = null)
    {
        if (socket.Protocol != LinuxUapi.Netlink.NETLINK_GENERIC)
            throw new ArgumentException("a NETLINK_GENERIC socket is needed", nameof(socket));
        var request = new NetlinkRequest(GENL_ID_CTRL, 0, (ref NetlinkWriter w) => WriteGetFamily(ref w, name), $"resolve generic netlink family {name}");
        try
        {
            return socket.Query(request, ParseFamily);
        }
        catch (NetlinkException e) when (e.Errno == LinuxUapi.Errno.ENOENT)
        {
            throw new GenericNetlinkFamilyNotFoundException(name, missingMeaning ?? $"the kernel has no generic netlink family {name}");
        }
    }

    /// <summary>CTRL_CMD_GETFAMILY for <paramref name="name"/> (the genlmsghdr and attributes).</summary>
    public static void WriteGetFamily(ref NetlinkWriter writer, string name)
    {
        writer.WriteGenericHeader(CTRL_CMD_GETFAMILY, 1);
        writer.PutString(CTRL_ATTR_FAMILY_NAME, name);
    }

    /// <summary>Reads a CTRL_CMD_NEWFAMILY reply.</summary>
    public static GenericNetlinkFamily ParseFamily(NetlinkMessage message)
    {
        string? name = null;
        ushort? id = null;
        uint version = 0, headerSize = 0, maxAttribute = 0;
        foreach (var attribute in message.Attributes(GENL_HDRLEN))
        {
            switch (attribute.Type)
            {
                case CTRL_ATTR_FAMILY_NAME: name = attribute.String; break;
                case CTRL_ATTR_FAMILY_ID: id = attribute.U16; break;
                case CTRL_ATTR_VERSION: version = attribute.U32; break;
                case CTRL_ATTR_HDRSIZE: headerSize = attribute.U32; break;
                case CTRL_ATTR_MAXATTR: maxAttribute = attribute.U32; break;
            }
        }
        if (name is null || id is null) throw new NetlinkProtocolException("CTRL_CMD_NEWFAMILY reply without a family name or id");
        return new GenericNetlinkFamily(name, id.Value, version, headerSize, maxAttribute);
    }
}
