using System.Runtime.InteropServices;
using static ProxyPlanes.Netlink.LinuxUapi;

namespace ProxyPlanes.Netlink;

/// <summary>
/// A netlink operation the kernel refused, or a socket call that failed. The message names the
/// operation, the error and its symbolic name, and the kernel's extended ACK text when it sent one:
/// <c>IPVS NEW_SERVICE 10.96.0.10:80/TCP: File exists (EEXIST)</c>.
/// </summary>
public class NetlinkException : Exception
{
    public NetlinkException(int errno, string operation, string? kernelMessage = null, string? hint = null)
        : base(Format(errno, operation, kernelMessage, hint))
    {
        Errno = errno;
        Operation = operation;
        KernelMessage = kernelMessage;
        HResult = errno;
    }

    /// <summary>For subclasses that word the whole message themselves.</summary>
    protected NetlinkException(string message, int errno, string operation, Exception? inner)
        : base(message, inner)
    {
        Errno = errno;
        Operation = operation;
        HResult = errno;
    }

    /// <summary>The positive errno value (EEXIST is 17).</summary>
    public int Errno { get; }

    /// <summary>What was attempted, e.g. <c>IPVS NEW_SERVICE 10.96.0.10:80/TCP</c>.</summary>
    public string Operation { get; }

    /// <summary>The kernel's extended ACK message (NLMSGERR_ATTR_MSG), if any.</summary>
    public string? KernelMessage { get; }

    /// <summary>The symbolic name of <see cref="Errno"/>, e.g. <c>EEXIST</c>.</summary>
    public string ErrnoName => NetlinkErrors.Name(Errno);

    private static string Format(int errno, string operation, string? kernelMessage, string? hint)
    {
        var text = $"{operation}: {Marshal.GetPInvokeErrorMessage(errno)} ({NetlinkErrors.Name(errno)})";
        if (!string.IsNullOrEmpty(kernelMessage)) text += $": {kernelMessage}";
        if (!string.IsNullOrEmpty(hint)) text += $"; {hint}";
        return text;
    }
}

/// <summary>
/// A generic netlink family the kernel does not have (its module is not loaded, or not built). The
/// message starts with what that means, e.g. <c>the kernel has no IPVS (modprobe ip_vs)</c>.
/// </summary>
public sealed class GenericNetlinkFamilyNotFoundException(string family, string meaning)
    : NetlinkException($"{meaning}: the kernel does not know the generic netlink family \"{family}\" (ENOENT)",
        LinuxUapi.Errno.ENOENT, $"resolve generic netlink family {family}", null)
{
    public string Family { get; } = family;
}

/// <summary>The kernel sent something this library cannot parse (a bug here or in the kernel).</summary>
public sealed class NetlinkProtocolException(string message) : Exception(message);

/// <summary>Symbolic errno names, for messages.</summary>
public static class NetlinkErrors
{
    private static readonly Dictionary<int, string> Names = new()
    {
        [Errno.EPERM] = "EPERM",
        [Errno.ENOENT] = "ENOENT",
        [Errno.ESRCH] = "ESRCH",
        [Errno.EINTR] = "EINTR",
        [Errno.EIO] = "EIO",
        [Errno.EBADF] = "EBADF",
        [Errno.EAGAIN] = "EAGAIN",
        [Errno.ENOMEM] = "ENOMEM",
        [Errno.EACCES] = "EACCES",
        [Errno.EBUSY] = "EBUSY",
        [Errno.EEXIST] = "EEXIST",
        [Errno.ENODEV] = "ENODEV",
        [Errno.EINVAL] = "EINVAL",
        [Errno.ENOSPC] = "ENOSPC",
        [Errno.EMLINK] = "EMLINK",
        [Errno.ERANGE] = "ERANGE",
        [Errno.EMSGSIZE] = "EMSGSIZE",
        [Errno.EPROTONOSUPPORT] = "EPROTONOSUPPORT",
        [Errno.EOPNOTSUPP] = "EOPNOTSUPP",
        [Errno.EAFNOSUPPORT] = "EAFNOSUPPORT",
        [Errno.EADDRINUSE] = "EADDRINUSE",
        [Errno.EADDRNOTAVAIL] = "EADDRNOTAVAIL",
        [Errno.ENOBUFS] = "ENOBUFS",
        [Errno.ELOOP] = "ELOOP",
        [Errno.ETIMEDOUT] = "ETIMEDOUT",
        [Errno.ESTALE] = "ESTALE",
    };

    /// <summary>"EEXIST" for 17; "errno N" for values without a name here.</summary>
    public static string Name(int errno) => Names.TryGetValue(errno, out var name) ? name : $"errno {errno}";

    /// <summary>"TCP", "UDP", "SCTP" for an IP protocol number, else "protocol N".</summary>
    internal static string ProtocolText(int protocol) => protocol switch
    {
        LinuxUapi.Socket.IPPROTO_TCP => "TCP",
        LinuxUapi.Socket.IPPROTO_UDP => "UDP",
        LinuxUapi.Socket.IPPROTO_SCTP => "SCTP",
        _ => $"protocol {protocol}",
    };

    internal static string ProtocolName(int protocol) => protocol switch
    {
        LinuxUapi.Netlink.NETLINK_ROUTE => "NETLINK_ROUTE",
        LinuxUapi.Netlink.NETLINK_SOCK_DIAG => "NETLINK_SOCK_DIAG",
        LinuxUapi.Netlink.NETLINK_GENERIC => "NETLINK_GENERIC",
        LinuxUapi.Netlink.NETLINK_NETFILTER => "NETLINK_NETFILTER",
        _ => $"netlink protocol {protocol}",
    };
}
