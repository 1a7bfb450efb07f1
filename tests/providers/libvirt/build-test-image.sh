#!/usr/bin/env bash
# Builds the small bootable pod VM stand-in used by the libvirt provider tests:
# Debian bookworm (debootstrap minbase) with a kernel, systemd and systemd-networkd doing
# DHCP on every ethernet interface. The disk boots under BIOS (GRUB in the MBR gap) and
# under UEFI (GRUB as \EFI\BOOT\BOOTX64.EFI on a FAT partition). It is built without loop
# mounts: mkfs.ext4 -d fills the root file system, mtools fills the ESP, dd assembles the
# partitions, qemu-img converts the result to qcow2.
#
# Usage: build-test-image.sh [OUTPUT.qcow2]   (default /var/cache/peerpods-test/podvm-test.qcow2)
# The result is cached: a rerun with an unchanged script returns at once.
set -euo pipefail

out=${1:-/var/cache/peerpods-test/podvm-test.qcow2}
here=$(cd "$(dirname "$0")" && pwd)
stamp="$out.stamp"
digest=$(sha256sum "$here/build-test-image.sh" | cut -d' ' -f1)

if [ -s "$out" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$digest" ]; then
    echo "build-test-image: $out is up to date"
    exit 0
fi

for tool in debootstrap mkfs.ext4 mkfs.vfat mcopy mmd sfdisk grub-mkimage qemu-img; do
    command -v "$tool" >/dev/null || { echo "build-test-image: $tool is missing" >&2; exit 1; }
done

# The Debian mirror this machine already uses (deb822 first, then the one-line format).
mirror=""
if [ -r /etc/apt/sources.list.d/debian.sources ]; then
    mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
fi
if [ -z "$mirror" ] && [ -r /etc/apt/sources.list ]; then
    mirror=$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}' /etc/apt/sources.list)
fi
mirror=${mirror:-http://deb.debian.org/debian}

mkdir -p "$(dirname "$out")"
work=$(mktemp -d "$(dirname "$out")/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
root="$work/root"

echo "build-test-image: debootstrap from $mirror"
debootstrap --variant=minbase \
    --include=linux-image-amd64,systemd-sysv,udev,initramfs-tools,iproute2 \
    bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
        tail -n 40 "$work/debootstrap.log" >&2
        exit 1
    }

echo "podvm-test" >"$root/etc/hostname"
echo "LABEL=podvmroot / ext4 defaults,errors=remount-ro 0 1" >"$root/etc/fstab"
mkdir -p "$root/etc/systemd/network"
cat >"$root/etc/systemd/network/80-dhcp.network" <<'NET'
[Match]
Type=ether

[Network]
DHCP=ipv4
NET
chroot "$root" systemctl enable systemd-networkd.service >/dev/null 2>&1
# Nothing else is needed at boot; keep it short under emulation.
chroot "$root" systemctl mask apt-daily.timer apt-daily-upgrade.timer \
    systemd-networkd-wait-online.service >/dev/null 2>&1 || true
chroot "$root" passwd -d root >/dev/null
# A small initrd with just the drivers that reach the root disk: GRUB reads it through the
# BIOS and the guest unpacks it, both slow under emulation.
sed -i 's/^MODULES=.*/MODULES=list/' "$root/etc/initramfs-tools/initramfs.conf"
printf '%s\n' ahci ata_piix sd_mod virtio_pci virtio_blk virtio_scsi ext4 crc32c_generic \
    >>"$root/etc/initramfs-tools/modules"
chroot "$root" update-initramfs -u -k all >"$work/initramfs.log" 2>&1 || {
    cat "$work/initramfs.log" >&2
    exit 1
}
chroot "$root" systemctl mask systemd-journal-flush.service e2scrub_reap.service \
    systemd-update-utmp.service systemd-update-utmp-runlevel.service >/dev/null 2>&1 || true

# Trim what a test guest never uses, to keep the image and mkfs small.
rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/* \
    "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/*
for dir in drivers/gpu drivers/media drivers/net/wireless drivers/infiniband drivers/staging \
    drivers/iio drivers/bluetooth sound net/wireless net/mac80211 net/bluetooth; do
    rm -rf "$root"/lib/modules/*/kernel/$dir
done

kernel=$(cd "$root/boot" && ls vmlinuz-* | sort -V | tail -n 1)
initrd="initrd.img-${kernel#vmlinuz-}"
[ -f "$root/boot/$initrd" ] || { echo "build-test-image: no initrd in the image" >&2; exit 1; }

cat >"$work/grub.cfg" <<CFG
search --no-floppy --label podvmroot --set=root
linux /boot/$kernel root=LABEL=podvmroot ro console=ttyS0,115200 quiet
initrd /boot/$initrd
boot
CFG
mods="part_msdos ext2 fat search search_label linux boot"
grub-mkimage -O i386-pc -o "$work/core.img" -p /boot/grub -c "$work/grub.cfg" biosdisk $mods
grub-mkimage -O x86_64-efi -o "$work/BOOTX64.EFI" -p /EFI/BOOT -c "$work/grub.cfg" $mods

# Layout (MiB): [0,1) MBR + GRUB core | [1,33) ESP (FAT) | [33,end) root (ext4)
esp_mib=32
root_mib=$(( $(du -sm "$root" | cut -f1) * 13 / 10 + 128 ))
mkfs.vfat -C -n ESP "$work/esp.img" $((esp_mib * 1024)) >/dev/null
mmd -i "$work/esp.img" ::/EFI ::/EFI/BOOT
mcopy -i "$work/esp.img" "$work/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
mkfs.ext4 -q -L podvmroot -d "$root" "$work/root.img" "${root_mib}M"

disk="$work/disk.raw"
truncate -s $(( (1 + esp_mib + root_mib) * 1024 * 1024 )) "$disk"
sfdisk -q "$disk" <<PARTS
label: dos
start=1MiB, size=${esp_mib}MiB, type=ef
start=$((1 + esp_mib))MiB, type=83, bootable
PARTS
dd if="$work/esp.img" of="$disk" bs=1M seek=1 conv=notrunc status=none
dd if="$work/root.img" of="$disk" bs=1M seek=$((1 + esp_mib)) conv=notrunc status=none
# BIOS: GRUB's boot sector code (first 440 bytes, the partition table stays) loads core.img
# from sector 1, which is where its built-in block list points.
core_sectors=$(( ($(stat -c %s "$work/core.img") + 511) / 512 ))
[ "$core_sectors" -lt 2048 ] || { echo "build-test-image: core.img too large" >&2; exit 1; }
dd if=/usr/lib/grub/i386-pc/boot.img of="$disk" bs=440 count=1 conv=notrunc status=none
dd if="$work/core.img" of="$disk" bs=512 seek=1 conv=notrunc status=none

qemu-img convert -f raw -O qcow2 "$disk" "$work/out.qcow2"
mv "$work/out.qcow2" "$out"
echo "$digest" >"$stamp"
echo "build-test-image: wrote $out ($(du -h "$out" | cut -f1))"
