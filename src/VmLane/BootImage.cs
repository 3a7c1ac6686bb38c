using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;

namespace ProxyPlanes.VmLane;

/// <summary>
/// The image qemu boots. A bzImage decompresses itself, which under TCG takes about 2 s of every
/// boot; the uncompressed kernel inside it (an ELF with a PVH entry note, as Debian builds with
/// CONFIG_PVH) boots directly with <c>-kernel</c>. So it is extracted once and cached; when that
/// fails (unknown compression, tool missing, no PVH note) the bzImage itself is booted.
/// </summary>
public static class BootImage
{
    /// <summary>XEN_ELFNOTE_PHYS32_ENTRY: the PVH entry point qemu looks for in an uncompressed kernel.</summary>
    private const uint PvhEntryNote = 18;

    public static async Task<string> EnsureAsync(VmKernel kernel, string cacheDirectory, CancellationToken ct = default)
    {
        var info = new FileInfo(kernel.ImagePath);
        var key = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes($"{kernel.ImagePath} {info.Length} {info.LastWriteTimeUtc.Ticks}")))[..12];
        Directory.CreateDirectory(cacheDirectory);
        var path = Path.Combine(cacheDirectory, $"vmlinux-{kernel.Release}-{key}");
        if (File.Exists(path)) return path;

        var temp = $"{path}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp";
        try
        {
            if (await ExtractAsync(await File.ReadAllBytesAsync(kernel.ImagePath, ct), temp, ct))
            {
                File.Move(temp, path, overwrite: true);
                return path;
            }
            return kernel.ImagePath;
        }
        finally
        {
            File.Delete(temp);
        }
    }

    /// <summary>Tries each compressed stream the bzImage holds (as the kernel's scripts/extract-vmlinux does) until one is a PVH-bootable ELF.</summary>
    private static async Task<bool> ExtractAsync(byte[] bzImage, string target, CancellationToken ct)
    {
        (byte[] Magic, string Tool)[] formats =
        [
            ([0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00], "xz"),
            ([0x28, 0xB5, 0x2F, 0xFD], "zstd"),
            ([0x1F, 0x8B, 0x08], "gzip"),
        ];
        foreach (var (magic, tool) in formats)
        {
            var exe = HostTool.Find(tool);
            if (exe is null) continue;
            string[] args = tool == "xz" ? ["-dc", "--single-stream"] : ["-dc"];
            for (var at = bzImage.AsSpan().IndexOf(magic); at >= 0;)
            {
                using (var input = new MemoryStream(bzImage, at, bzImage.Length - at, writable: false))
                await using (var output = File.Create(target))
                {
                    // Trailing bytes after the stream make some tools exit non-zero: the output decides.
                    await HostTool.RunAsync(exe, args, ct, stdin: input, stdout: output);
                }
                if (IsPvhElf(target)) return true;
                var next = bzImage.AsSpan(at + 1).IndexOf(magic);
                at = next < 0 ? -1 : at + 1 + next;
            }
        }
        return false;
    }

    /// <summary>An x86-64 ELF with a Xen PVH entry note.</summary>
    public static bool IsPvhElf(string path)
    {
        try
        {
            using var file = File.OpenRead(path);
            var header = new byte[64];
            if (file.Read(header) < 64 || !header.AsSpan(0, 4).SequenceEqual((ReadOnlySpan<byte>)[0x7F, (byte)'E', (byte)'L', (byte)'F']) || header[4] != 2) return false;
            var phoff = BinaryPrimitives.ReadInt64LittleEndian(header.AsSpan(0x20));
            var phentsize = BinaryPrimitives.ReadUInt16LittleEndian(header.AsSpan(0x36));
            var phnum = BinaryPrimitives.ReadUInt16LittleEndian(header.AsSpan(0x38));
            for (var i = 0; i < phnum; i++)
            {
                var ph = new byte[56];
                file.Position = phoff + (long)i * phentsize;
                if (file.Read(ph) < 56 || BinaryPrimitives.ReadUInt32LittleEndian(ph) != 4 /* PT_NOTE */) continue;
                var offset = BinaryPrimitives.ReadInt64LittleEndian(ph.AsSpan(8));
                var size = BinaryPrimitives.ReadInt64LittleEndian(ph.AsSpan(0x20));
                if (size is <= 0 or > 1 << 20) continue;
                var notes = new byte[size];
                file.Position = offset;
                file.ReadExactly(notes);
                for (var n = 0; n + 12 <= notes.Length;)
                {
                    var nameSize = (int)BinaryPrimitives.ReadUInt32LittleEndian(notes.AsSpan(n));
                    var descSize = (int)BinaryPrimitives.ReadUInt32LittleEndian(notes.AsSpan(n + 4));
                    var type = BinaryPrimitives.ReadUInt32LittleEndian(notes.AsSpan(n + 8));
                    if (nameSize < 0 || descSize < 0 || nameSize > notes.Length || descSize > notes.Length) break;
                    var name = n + 12 + nameSize <= notes.Length ? notes.AsSpan(n + 12, nameSize) : [];
                    if (type == PvhEntryNote && name.StartsWith("Xen"u8)) return true;
                    n += 12 + Align4(nameSize) + Align4(descSize);
                }
            }
            return false;
        }
        catch (Exception e) when (e is IOException or ArgumentOutOfRangeException or EndOfStreamException or OverflowException)
        {
            return false;
        }
    }

    private static int Align4(int n) => (n + 3) & ~3;
}
