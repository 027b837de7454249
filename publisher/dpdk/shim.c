#include "shim.h"

#include <stdio.h>
#include <string.h>

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mbuf_dyn.h>
#include <rte_mempool.h>

static int timestamp_offset = -1;
static uint64_t timestamp_flag;

int mdi_dpdk_errno(void) { return rte_errno; }

const char *mdi_dpdk_strerror(int error) { return rte_strerror(error); }

int mdi_dpdk_eal_init(int argc, char **argv) { return rte_eal_init(argc, argv); }

int mdi_dpdk_eal_cleanup(void) { return rte_eal_cleanup(); }

uint16_t mdi_dpdk_port_count(void) { return rte_eth_dev_count_avail(); }

int mdi_dpdk_port_by_name(const char *name, uint16_t *port) {
    return rte_eth_dev_get_port_by_name(name, port);
}

struct rte_mempool *mdi_dpdk_pool_create(const char *name, unsigned n, uint16_t data_room) {
    return rte_pktmbuf_pool_create(name, n, 256, 0, data_room, (int)rte_socket_id());
}

void mdi_dpdk_pool_free(struct rte_mempool *pool) { rte_mempool_free(pool); }

int mdi_dpdk_port_start(uint16_t port, struct rte_mempool *pool, uint16_t rx_desc,
                        int *timestamps, char *driver, uint32_t driver_len) {
    struct rte_eth_dev_info info;
    struct rte_eth_conf conf;
    int ret;

    memset(&conf, 0, sizeof(conf));
    ret = rte_eth_dev_info_get(port, &info);
    if (ret != 0)
        return ret;
    if (driver_len > 0) {
        snprintf(driver, driver_len, "%s", info.driver_name ? info.driver_name : "");
    }
    if (info.rx_offload_capa & RTE_ETH_RX_OFFLOAD_TIMESTAMP)
        conf.rxmode.offloads |= RTE_ETH_RX_OFFLOAD_TIMESTAMP;
    *timestamps = 0;
    ret = rte_eth_dev_configure(port, 1, 1, &conf);
    if (ret != 0)
        return ret;
    ret = rte_eth_dev_adjust_nb_rx_tx_desc(port, &rx_desc, NULL);
    if (ret != 0)
        return ret;
    ret = rte_eth_rx_queue_setup(port, 0, rx_desc, rte_eth_dev_socket_id(port), NULL, pool);
    if (ret != 0)
        return ret;
    ret = rte_eth_tx_queue_setup(port, 0, 64, rte_eth_dev_socket_id(port), NULL);
    if (ret != 0)
        return ret;
    ret = rte_eth_dev_start(port);
    if (ret != 0)
        return ret;
    /* multicast frames must reach us: not every driver filters, none should here */
    rte_eth_promiscuous_enable(port);
    rte_eth_allmulticast_enable(port);
    /* drivers that stamp frames register the field and flag (net_pcap does so at probe,
     * with the capture time, without offering the offload); each frame's flag says */
    {
        int flag = rte_mbuf_dynflag_lookup(RTE_MBUF_DYNFLAG_RX_TIMESTAMP_NAME, NULL);
        timestamp_offset = rte_mbuf_dynfield_lookup(RTE_MBUF_DYNFIELD_TIMESTAMP_NAME, NULL);
        if (flag < 0 || timestamp_offset < 0) {
            *timestamps = 0;
            timestamp_offset = -1;
        } else {
            timestamp_flag = UINT64_C(1) << flag;
            *timestamps = 1;
        }
    }
    return 0;
}

void mdi_dpdk_port_stop(uint16_t port) {
    rte_eth_dev_stop(port);
    rte_eth_dev_close(port);
}

uint16_t mdi_dpdk_rx_burst(uint16_t port, struct rte_mbuf **mbufs, uint16_t n) {
    return rte_eth_rx_burst(port, 0, mbufs, n);
}

const uint8_t *mdi_dpdk_mbuf_data(const struct rte_mbuf *mbuf, uint32_t *len) {
    *len = mbuf->data_len;
    return rte_pktmbuf_mtod(mbuf, const uint8_t *);
}

uint32_t mdi_dpdk_mbuf_pkt_len(const struct rte_mbuf *mbuf, uint16_t *segments) {
    *segments = mbuf->nb_segs;
    return mbuf->pkt_len;
}

int mdi_dpdk_mbuf_timestamp(const struct rte_mbuf *mbuf, uint64_t *timestamp) {
    if (timestamp_offset < 0 || !(mbuf->ol_flags & timestamp_flag))
        return 0;
    *timestamp = *RTE_MBUF_DYNFIELD(mbuf, timestamp_offset, const rte_mbuf_timestamp_t *);
    return 1;
}

void mdi_dpdk_free_bulk(struct rte_mbuf **mbufs, unsigned n) { rte_pktmbuf_free_bulk(mbufs, n); }

int mdi_dpdk_port_stats(uint16_t port, uint64_t *packets, uint64_t *missed,
                        uint64_t *errors, uint64_t *no_mbuf) {
    struct rte_eth_stats stats;
    int ret = rte_eth_stats_get(port, &stats);
    if (ret != 0)
        return ret;
    *packets = stats.ipackets;
    *missed = stats.imissed;
    *errors = stats.ierrors;
    *no_mbuf = stats.rx_nombuf;
    return 0;
}
